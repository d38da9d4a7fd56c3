"""`omnideft bench PROTOCOL`: generate every job of a protocol with fixed seeds, then score it.

OUT/images/<id>.png are the generated images (existing ones are skipped, so a stopped run resumes), OUT/refs/ and
OUT/conds/ the images they are scored against, OUT/scores.csv one row per image (with its seed), OUT/summary.json
per-task statistics with the exact command, seeds, settings and library versions, OUT/summary.md the table.
OUT/run.json pins the model, adapters, inputs and generation settings: another run cannot resume into it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from omnideft.bench.generator import GenerationSettings, Generator, resolved
from omnideft.bench.protocol import ProtocolInputs
from omnideft.bench.protocols import protocol_class
from omnideft.errors import UserError
from omnideft.eval.metrics import MetricOptions, metric_class
from omnideft.eval.provenance import claim_output, provenance
from omnideft.eval.scoring import ScoreItem, ScoreTable, score_items
from omnideft.eval.summary import write_summary
from omnideft.families.generator import resolve_device
from omnideft.images import save_image_atomic
from omnideft.progress import progress_bar


@dataclass
class BenchRequest:
    protocol: str
    out: str
    generation: GenerationSettings
    inputs: ProtocolInputs
    options: MetricOptions
    seed: int = 0
    limit: int | None = None
    label: str | None = None
    progress: bool = True


def default_label(adapters: list[str]) -> str:
    """'base', or the adapter folder names joined by '+' (weights of PATH:WEIGHT dropped)."""
    names = []
    for arg in adapters:
        path, _, weight = arg.rpartition(":")
        names.append(Path(path if path and weight.replace(".", "", 1).lstrip("-").isdigit() else arg).name)
    return "+".join(names) or "base"


def run_bench(req: BenchRequest, argv: list[str] | None = None) -> list[Path]:
    protocol = protocol_class(req.protocol)(req.inputs)
    if req.limit is not None and req.limit < 1:
        raise UserError(f"--limit {req.limit} must be >= 1")
    out = Path(req.out)
    out.mkdir(parents=True, exist_ok=True)
    gen = resolved(req.generation)  # unset settings are the family's defaults, recorded as such
    identity = {"protocol": req.protocol, "model": gen.model,
                "adapters": [str(Path(a).resolve()) for a in gen.adapters], "seed": req.seed,
                **{k: v for k, v in asdict(gen).items() if k not in ("model", "adapters", "device")},
                **protocol.identity()}
    claim_output(out, identity, {}, "a bench run")
    generator = Generator(gen)
    items, groups, seen = [], {}, set()
    jobs = protocol.jobs()
    for index, job in enumerate(progress_bar(jobs, desc=f"bench {req.protocol}", disable=not req.progress)):
        if req.limit is not None and index >= req.limit:
            break
        if job.id in seen:
            raise UserError(f"bench {req.protocol}: two jobs are named {job.id} (the same subject or shards twice?)")
        seen.add(job.id)
        seed = req.seed + index
        pred = out / "images" / f"{job.id}.png"
        refs = [out / "refs" / f"{rid}.png" for rid in job.ref_ids]
        for path, img in zip(refs, job.refs):
            if not path.exists():
                save_image_atomic(img, path)
        cond = None
        if job.cond is not None:
            cond = out / "conds" / f"{job.id}.png"
            if not cond.exists():
                save_image_atomic(job.cond, cond)
        if not pred.exists():
            save_image_atomic(generator.render(job.instruction, job.inputs, job.size, seed), pred)
        items.append(ScoreItem(name=job.id, pred=pred, refs=tuple(refs), prompt=job.prompt, cond=cond,
                               group=job.group, columns={"seed": str(seed)}))
        groups.setdefault(job.metrics, []).append(items[-1])
    if not items:
        raise UserError(f"bench {req.protocol}: no jobs in the inputs")
    metrics_used = list(dict.fromkeys(m for ms in groups for m in ms))
    claim_output(out, identity, {m: metric_class(m).settings_of(req.options) for m in metrics_used}, "a bench run")
    table = ScoreTable(out / "scores.csv")
    set_values: dict[str, dict[str, float]] = {}
    for metrics, members in groups.items():
        for group, values in score_items(members, list(metrics), req.options, table, req.progress).items():
            set_values.setdefault(group, {}).update(values)
    info = {"kind": "bench", "protocol": req.protocol, "label": req.label or default_label(gen.adapters),
            **provenance(argv, resolve_device(gen.device)),
            "model": gen.model, "adapters": gen.adapters, "seeds": {"first": req.seed, "rule": "seed + job index",
                                                                    "jobs": len(items)},
            "generation": asdict(gen), "inputs": asdict(req.inputs), "limit": req.limit}
    title = f"bench {req.protocol}: {info['label']}"
    return [out / "scores.csv", *write_summary(out, table, set_values, info, title, {it.name for it in items})]
