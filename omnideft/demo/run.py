"""The offline demo: teach the pretrained `small` OmniGen a task family it has never seen, with a rank-8 DEFT adapter
trained from in-context examples, and show (and measure) that it now does it while keeping what it knew.

    shards (family B)  ->  omnideft train (DEFT r8 on `small`)  ->  held-out queries: base vs base + DEFT
                                                                ->  family A queries: what the base knew, kept?

Every number in the report is measured in this run; nothing is canned.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from omnideft.adapters.registry import get_method
from omnideft.demo import DEFAULTS
from omnideft.demo.plot import loss_plot
from omnideft.demo.study import AdaptationStudy, pick_rows
from omnideft.files import write_text_atomic
from omnideft.images import save_image_atomic
from omnideft.shapes.score import comparison_sheet

RANK = 8
LR = 2e-3  # every method alike, as benchmarks/retention.py's common lr (the rest: AdaptationStudy.train)


def run_demo(out_dir: str = "demo_out", steps: int = DEFAULTS["steps"], samples: int = DEFAULTS["samples"],
             seed: int = 0, queries: int = DEFAULTS["queries"], retention_queries: int = DEFAULTS["retention_queries"],
             method: str = "deft", replay: float = DEFAULTS["replay"], progress: bool = True) -> dict:
    out = Path(out_dir)
    adapted_label = f"base + {get_method(method).title}"
    recipe = [f"adapter.method={method}", f"adapter.rank={RANK}", f"train.lr={LR}"]
    t0 = time.perf_counter()
    study = AdaptationStudy(out, seed=seed, train_samples=samples, queries=queries,
                            retention_queries=retention_queries, replay=replay)
    study.write_shards()
    study.train(out, recipe, steps, progress=progress)
    train_s = time.perf_counter() - t0
    base, adapted = study.score(None, progress), study.score(out / "adapter", progress)

    losses = [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    save_image_atomic(loss_plot(losses), out / "loss.png")
    for name, family, queries_, per_task in (("samples.png", "B", study.fit_queries, 6),
                                             ("retention.png", "A", study.kept_queries, 1)):
        picks = pick_rows(queries_, per_task)
        save_image_atomic(comparison_sheet([queries_[i] for i in picks], {
            "base": [base.images[family][i] for i in picks],
            adapted_label: [adapted.images[family][i] for i in picks]}), out / name)
    write_answer_folders(out / "answers", study.fit_queries, {"base": base.images["B"], method: adapted.images["B"]})

    k = max(1, len(losses) // 10)
    both = {"base": base, "adapted": adapted}
    result = {
        "base_model": "small", "method": method, "rank": RANK, "new_tasks": study.new_tasks,
        "known_tasks": study.known_tasks, "steps": steps, "train_samples": samples, "replay": replay,
        "heldout_queries": len(study.fit_queries),
        "retention_queries": len(study.kept_queries),
        "iou": {k_: s.fit["iou"] for k_, s in both.items()},
        "colour_error": {k_: s.fit["colour_error"] for k_, s in both.items()},
        "heldout_denoising_loss": {k_: s.fit["denoising_loss"] for k_, s in both.items()},
        "per_task": {k_: s.fit["per_task"] for k_, s in both.items()},
        "retention": {"iou": {k_: s.kept["iou"] for k_, s in both.items()},
                      "colour_error": {k_: s.kept["colour_error"] for k_, s in both.items()},
                      "heldout_denoising_loss": {k_: s.kept["denoising_loss"] for k_, s in both.items()},
                      "per_task": {k_: s.kept["per_task"] for k_, s in both.items()}},
        "loss_start": float(np.mean(losses[:k])), "loss_end": float(np.mean(losses[-k:])),
        "train_seconds": round(train_s, 1), "total_seconds": round(time.perf_counter() - t0, 1),
    }
    write_text_atomic(out / "report.md", _report(result, k, adapted_label))
    write_text_atomic(out / "report.json", json.dumps(result, indent=2) + "\n")
    return result


def write_answer_folders(folder: Path, samples: list, outputs: dict[str, list]) -> None:
    """folder/<model>/<task>_<i>.png for each model's answers and folder/target/ the true targets, matched by name, so
    `omnideft eval --pred folder/deft --ref folder/target` rescores them with any metric."""
    names = [f"{s.task.rsplit('/', 1)[-1]}_{i:03d}.png" for i, s in enumerate(samples)]
    for model, images in {**outputs, "target": [s.target for s in samples]}.items():
        for name, img in zip(names, images):
            save_image_atomic(img, folder / model / name)


def _replay_sentence(replay: float) -> str:
    if not replay:
        return "Every training sample was of the new tasks."
    return (f"{replay:.0%} of the training samples were of family A (prior preservation, as DreamBooth does: "
            "`--replay 0` trains on the new tasks alone; `benchmarks/retention.py` measures the methods without it).")


def _pair(d: dict) -> str:
    return f"{d['base']:.4f} / {d['adapted']:.4f}"


def _report(r: dict, k: int, adapted: str) -> str:
    def row(name: str, table: dict) -> str:
        b, a = table["base"], table["adapted"]
        return (f"| {name} | {b['iou']:.3f} | {a['iou']:.3f} | {b['colour_error']:.1f} | {a['colour_error']:.1f} |")

    def mean(part: dict) -> str:
        return row("**mean**", {lbl: {m: part[m][lbl] for m in ("iou", "colour_error")} for lbl in ("base", "adapted")})

    fit = "\n".join(row(t, {lbl: r["per_task"][lbl][t] for lbl in ("base", "adapted")}) for t in r["new_tasks"])
    kept = "\n".join(row(t, {lbl: r["retention"]["per_task"][lbl][t] for lbl in ("base", "adapted")})
                     for t in r["known_tasks"])
    mean_b, mean_a = mean(r), mean(r["retention"])
    head = (f"| task | IoU base | IoU {adapted} | colour error base | colour error {adapted} |\n"
            "|---|---|---|---|---|")
    return f"""# omnideft demo report

The pretrained `small` OmniGen (docs/models.md) learned family A of the shape-world tasks. Here a rank-{r['rank']}
{adapted.removeprefix('base + ')} adapter taught it family B — tasks it never saw — from {r['train_samples']} \
in-context training samples in {r['steps']} steps (batch 8), on CPU. {_replay_sentence(r['replay'])} Then base and \
{adapted} answered the same held-out queries with the same noise.

IoU: overlap of the generated shape's mask with the true target's (1 = exact). Colour error: distance in RGB
(0-255 per channel) between the generated colour where the shape should be and the right colour (0 = exact).

## New tasks (family B): {r['heldout_queries']} held-out queries

{head}
{fit}
{mean_b}

`samples.png`: per row the in-context examples, the query, the base's answer, the adapted model's answer and
(last) the true target.

## What the base knew (family A): {r['retention_queries']} held-out queries

{head}
{kept}
{mean_a}

`retention.png` shows one query of each task. `answers/` holds every answer to the new tasks (`base/`,
`{r['method']}/`) and the true targets (`target/`), matched by file name: `omnideft eval --pred answers/{r['method']}
--ref answers/target --metrics shape_iou,colour_error,ssim --out DIR` rescores them.

## Training

| measure | value |
|---|---|
| training loss, mean of first {k} steps | {r['loss_start']:.4f} |
| training loss, mean of last {k} steps | {r['loss_end']:.4f} |
| held-out denoising loss, new tasks: base / {adapted} | {_pair(r['heldout_denoising_loss'])} |
| held-out denoising loss, known tasks: base / {adapted} | {_pair(r['retention']['heldout_denoising_loss'])} |
| time to write the shards and train (s) | {r['train_seconds']} |
| total time (s) | {r['total_seconds']} |

`loss.png` is the training curve.
"""
