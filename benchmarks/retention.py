"""Benchmark: the DEFT paper's central claim at CPU scale — does DEFT keep what a pretrained model knew better than
LoRA while it learns something new?

The pretrained `small` OmniGen knows family A of the shape-world tasks; adapters teach it family B (tasks it never
saw) from in-context training samples (omnideft/demo/study.py: the same data, queries and noise for every run).
Methods at equal rank, steps and learning rate: LoRA, DEFT (`relu` and `qr` projectors), PaRa and OFT, each for SEEDS
seeds at two lengths (SHORT steps, and LONG = 4 x SHORT: the SHORT adapter is the checkpoint of the LONG run), each
trained on B alone and with replay (REPLAY of the training samples drawn from family A, as the demo does); the two
replay settings are reported separately. Each method is also run at its own best learning rate from a small sweep
(SWEEP, one seed, SHORT steps, picked by the held-out denoising loss on family B), reported separately.

Equal rank: `adapter.rank` = RANK for every method. For LoRA, DEFT and PaRa that is the rank of the update; OFT's
`rank` is its number of orthogonal blocks (PEFT's OFT `r`; docs/adapters.md), and OFT's update is dense, so no
rank matches it exactly: RANK blocks is the setting of equal size. At `small`'s width 128 (block size 16) OFT with
8 blocks trains 83,712 parameters, LoRA and DEFT at rank 8 train 90,112 and PaRa 53,248 (OFT with 4 blocks would
train twice as many, 169,728; with 16, 40,704).

Measured per adapter: fit on B (task IoU, colour error, held-out denoising loss) and retention of A (the same on A's
held-out queries and samples, and, with `--dinov2-model`, drift: how far the adapted model's answers to A's
held-out queries moved from the base's answers to the same queries with the same noise, PEFT's DINOv2 drift exactly
as the trainer's forgetting gauge computes it, omnideft/eval/retention/drift.py: (1 - mean cosine of the DINOv2
CLS embeddings) / 2, 0 = the base's answers). Without `--dinov2-model` the drift column is absent and the output
says why. Prints a table of mean ± std over seeds per replay setting, writes retention.png (metric vs steps, one
line per method, no replay) and retention.json into OUT (default benchmarks/out/retention), states plainly whether
DEFT keeps A better than LoRA at this scale and by how much, and prints one JSON object on its last line:
{"deft_relu": {"fit_B": IoU on B, "retain_A": IoU on A, "retain_A_drift": ..., "fit_B_replay": ...,
"retain_A_replay": ..., ...}, ...} (LONG runs at the common learning rate).

    python benchmarks/retention.py [OUT] [--quick] [--no-sweep] [--dinov2-model DIR]

Time on 2 cores: with --no-sweep (30 runs of LONG steps, each scored twice, drift included) 70 minutes, measured
on the current `small` (partly beside other work; alone, a run and its scoring take about a minute). The sweep adds 30
runs of SHORT steps and up to 30 more of LONG steps at the best lrs: up to about 2.5 hours (estimated).
--quick: a smoke run of about 30 s (one seed, 1 and 4 steps, no sweep, one query per task,
2 sampler steps).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from PIL import Image, ImageDraw  # noqa: E402

from omnideft.demo.study import AdaptationStudy  # noqa: E402
from omnideft.errors import UserError  # noqa: E402
from omnideft.eval.retention.drift import DEFINITION, PEFT_SOURCE, drift, load_encoder  # noqa: E402

METHODS = {
    "lora": ["adapter.method=lora"],
    "deft_relu": ["adapter.method=deft", "adapter.projector=relu"],
    "deft_qr": ["adapter.method=deft", "adapter.projector=qr"],
    "para": ["adapter.method=para"],
    "oft": ["adapter.method=oft"],
}
RANK = 8
LR = 2e-3
SWEEP = (1e-3, 2e-3, 4e-3)
SHORT = 50
SEEDS = (0, 1, 2)
REPLAY = 0.25  # the demo's share of family-A samples
REPLAYS = {"no_replay": 0.0, "replay": REPLAY}
QUICK = {"SHORT": 1, "SEEDS": (0,), "SWEEP": (LR,), "queries": 1, "retention_queries": 1, "sampler_steps": 2,
         "denoising_samples": 4}
METRICS = (("fit", "iou"), ("fit", "colour_error"), ("fit", "denoising_loss"),
           ("kept", "iou"), ("kept", "colour_error"), ("kept", "denoising_loss"))
NO_DRIFT = "drift not measured: no --dinov2-model given (a DINOv2 folder or cached hub id, e.g. facebook/dinov2-small)"


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", nargs="?", default=str(Path(__file__).parent / "out" / "retention"))
    parser.add_argument("--quick", action="store_true", help="a smoke run of a minute or two")
    parser.add_argument("--no-sweep", action="store_true", help="the common learning rate only: no sweep, no "
                        "best-lr table (about half the time)")
    parser.add_argument("--dinov2-model", metavar="DIR", help="DINOv2 for the drift column (a local folder or a "
                        "cached hub id); without it the drift column is absent")
    return parser.parse_args(argv)


def main(argv: list[str]) -> dict:
    args = parse(argv)
    quick, out = args.quick, Path(args.out)
    short, seeds, sweep = (QUICK["SHORT"], QUICK["SEEDS"], QUICK["SWEEP"]) if quick else (SHORT, SEEDS, SWEEP)
    if args.no_sweep:
        sweep = (LR,)
    t0 = time.perf_counter()
    # loaded before any training, so a folder that is not DINOv2 fails in a second
    encoder = load_encoder(args.dinov2_model, flag="--dinov2-model") if args.dinov2_model else None
    drift_info = ({"dinov2_model": args.dinov2_model, "definition": DEFINITION, "source": PEFT_SOURCE} if encoder
                  else {"absent": NO_DRIFT})
    print(f"drift: DINOv2 from {args.dinov2_model}; {DEFINITION}" if encoder else NO_DRIFT, flush=True)
    sizes = {k: QUICK[k] for k in ("queries", "retention_queries", "sampler_steps", "denoising_samples")} if quick \
        else {"queries": 8, "retention_queries": 2}
    study = AdaptationStudy(out / "data", seed=0, replay=REPLAY, **sizes)
    study.write_shards()  # family B's shards, family A's replay shards, both held-out sets
    studies = {label: replace(study, replay=share) for label, share in REPLAYS.items()}  # same data, queries, noise
    scored: dict = {}
    base_embeddings = None

    def score(adapter: Path | None) -> dict:  # a run reused by the sweep and the best-lr runs is scored once
        nonlocal base_embeddings
        if adapter not in scored:
            scores = study.score(adapter)
            row = flatten(scores)
            if encoder is not None:  # family A's answers vs the base's (the base is scored first)
                embeddings = encoder.images(scores.images["A"])
                if adapter is None:
                    base_embeddings = embeddings
                row["kept_drift"] = drift(base_embeddings, embeddings)
            scored[adapter] = row
        return scored[adapter]

    base = score(None)
    log(f"base: {fmt(base)}")

    def run(label: str, method: str, lr: float, seed: int, steps: int, checkpoint_every: int = 0) -> Path:
        name = f"{method}-{label}-lr{lr:g}-seed{seed}-steps{steps}"
        folder = out / "runs" / name
        if not (folder / "adapter" / "adapter_model.safetensors").is_file():
            studies[label].train(folder, [*METHODS[method], f"adapter.rank={RANK}", f"train.lr={lr}"], steps,
                                 seed=seed, checkpoint_every=checkpoint_every)
        return folder

    results: dict = {}
    best_lr: dict = {}
    for label in REPLAYS:
        best_lr[label] = {}
        for method in METHODS:  # the sweep: one seed, SHORT steps, judged on family B's held-out denoising loss
            if len(sweep) == 1:  # --quick: nothing to pick from
                best_lr[label][method] = sweep[0]
                continue
            losses = {lr: study.denoising_loss(run(label, method, lr, 0, short) / "adapter") for lr in sweep}
            best_lr[label][method] = min(losses, key=losses.get)
            log(f"sweep {label} {method}: " + ", ".join(f"lr {lr:g}: {v:.4f}" for lr, v in losses.items()) +
                f" -> {best_lr[label][method]:g}")
        results[label] = {}
        settings = {"common_lr": {m: LR for m in METHODS}, "best_lr": best_lr[label]}
        if args.no_sweep:  # nothing was picked
            del settings["best_lr"]
        for lr_label, lrs in settings.items():
            results[label][lr_label] = {}
            for method, lr in lrs.items():
                per_length: dict = {"short": [], "long": []}
                for seed in seeds:
                    folder = run(label, method, lr, seed, 4 * short, checkpoint_every=short)
                    per_length["short"].append(score(folder / "checkpoints" / f"step-{short:07d}"))
                    per_length["long"].append(score(folder / "adapter"))
                    log(f"{label} {lr_label} {method} lr {lr:g} seed {seed}: long {fmt(per_length['long'][-1])}")
                results[label][lr_label][method] = {"lr": lr, **{k: aggregate(v) for k, v in per_length.items()}}

    report = {"base": base, "rank": RANK, "short_steps": short, "long_steps": 4 * short, "seeds": list(seeds),
              "replay": REPLAYS, "common_lr": LR, "best_lr": best_lr, "drift": drift_info, "results": results,
              "seconds": round(time.perf_counter() - t0, 1)}
    report["verdict"] = {label: verdict(report, label) for label in REPLAYS}
    out.mkdir(parents=True, exist_ok=True)
    (out / "retention.json").write_text(json.dumps(report, indent=2) + "\n")
    plot(report).save(out / "retention.png")
    for label in REPLAYS:
        print(f"\n{title(label)}:\n{table(report, label)}\n{report['verdict'][label]}")
    print(f"\n{'drift: DINOv2 from ' + args.dinov2_model if encoder else NO_DRIFT}")
    print(json.dumps(summary(report)))
    return report


def summary(report: dict) -> dict:
    """The last line: LONG runs at the common lr; keys without a suffix are without replay."""
    out: dict = {}
    for label, suffix in (("no_replay", ""), ("replay", "_replay")):
        for method, r in report["results"][label]["common_lr"].items():
            row = out.setdefault(method, {})
            long, short = r["long"], r["short"]
            row.update({f"fit_B{suffix}": long["fit_iou"]["mean"], f"retain_A{suffix}": long["kept_iou"]["mean"],
                        f"fit_B_denoising_loss{suffix}": long["fit_denoising_loss"]["mean"],
                        f"retain_A_denoising_loss{suffix}": long["kept_denoising_loss"]["mean"],
                        f"fit_B_short{suffix}": short["fit_iou"]["mean"],
                        f"retain_A_short{suffix}": short["kept_iou"]["mean"]})
            if "kept_drift" in long:
                row.update({f"retain_A_drift{suffix}": long["kept_drift"]["mean"],
                            f"retain_A_drift_short{suffix}": short["kept_drift"]["mean"]})
    out["base"] = {"fit_B": report["base"]["fit_iou"], "retain_A": report["base"]["kept_iou"]}
    return out


def title(label: str) -> str:
    share = REPLAYS[label]
    return "trained on B alone (no replay)" if not share else f"with replay ({share:g} of the samples from family A)"

def flatten(scores) -> dict:
    return {f"{part}_{metric}": getattr(scores, part)[metric] for part, metric in METRICS}


def aggregate(rows: list[dict]) -> dict:
    return {k: {"mean": statistics.fmean(r[k] for r in rows),
                "std": statistics.stdev(r[k] for r in rows) if len(rows) > 1 else 0.0} for k in rows[0]}


def fmt(row: dict) -> str:
    drift_text = f" drift {row['kept_drift']:.4f}" if "kept_drift" in row else ""
    return (f"B IoU {row['fit_iou']:.3f} loss {row['fit_denoising_loss']:.4f} | "
            f"A IoU {row['kept_iou']:.3f} loss {row['kept_denoising_loss']:.4f}{drift_text}")


def table(report: dict, replay: str) -> str:
    """One replay setting: the base, then every method at the common and at its best lr, both lengths; the A drift
    column only when drift was measured."""
    cols = [f"{part}_{metric}" for part, metric in METRICS] + (["kept_drift"] if "kept_drift" in report["base"] else [])
    head = ["lr", "run", "steps", *(c.replace("fit_", "B ").replace("kept_", "A ") for c in cols)]
    lines = ["| method | " + " | ".join(head) + " |", "|---" * (len(head) + 1) + "|"]
    base = report["base"]
    digits = {c: 4 if c == "kept_drift" else 3 for c in cols}  # drift is small: 0.01 is already a visible change
    lines.append("| base | - | - | 0 | " + " | ".join(f"{base[c]:.{digits[c]}f}" for c in cols) + " |")
    for label, runs in report["results"][replay].items():  # common_lr, and best_lr unless --no-sweep
        for method, r in runs.items():
            for length in ("short", "long"):
                steps = report["short_steps"] if length == "short" else report["long_steps"]
                cells = [f"{r[length][c]['mean']:.{digits[c]}f} ± {r[length][c]['std']:.{digits[c]}f}" for c in cols]
                lines.append(f"| {method} | {r['lr']:g} | {label} | {steps} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def verdict(report: dict, replay: str) -> str:
    """Does DEFT keep family A better than LoRA (in one replay setting)? A difference counts when it exceeds the
    seeds' spread; what each paid for it on B is said alongside, at the common lr and at each method's best lr."""
    base = report["base"]["kept_iou"]
    runs = report["results"][replay]
    parts = []
    for name in ("deft_relu", "deft_qr"):
        d, lora = runs["common_lr"][name]["long"], runs["common_lr"]["lora"]["long"]
        diff = d["kept_iou"]["mean"] - lora["kept_iou"]["mean"]
        noise = (d["kept_iou"]["std"] ** 2 + lora["kept_iou"]["std"] ** 2) ** 0.5
        better = "better than" if diff > noise else ("worse than" if -diff > noise else "no differently from")
        text = (f"{name} keeps family A {better} LoRA after {report['long_steps']} steps at equal rank and lr: A IoU "
                f"{d['kept_iou']['mean']:.3f} vs {lora['kept_iou']['mean']:.3f} (base {base:.3f}; difference "
                f"{diff:+.3f}, seed spread {noise:.3f}), fitting B to IoU {d['fit_iou']['mean']:.3f} vs "
                f"{lora['fit_iou']['mean']:.3f}")
        if "kept_drift" in d:
            text += f", A drift {d['kept_drift']['mean']:.4f} vs {lora['kept_drift']['mean']:.4f}"
        if "best_lr" in runs:
            best, best_lora = runs["best_lr"][name], runs["best_lr"]["lora"]
            text += (f"; each at its best lr ({best['lr']:g} vs {best_lora['lr']:g}): A IoU "
                     f"{best['long']['kept_iou']['mean']:.3f} vs {best_lora['long']['kept_iou']['mean']:.3f}, B IoU "
                     f"{best['long']['fit_iou']['mean']:.3f} vs {best_lora['long']['fit_iou']['mean']:.3f}")
        parts.append(text)
    return "; ".join(parts) + "."


def plot(report: dict, width: int = 900, height: int = 380) -> Image.Image:
    """Two panels (IoU on the new tasks, IoU on the known tasks) vs training steps; one line per method (common lr,
    no replay)."""
    colours = {"lora": (200, 60, 40), "deft_relu": (40, 90, 200), "deft_qr": (40, 160, 80), "para": (150, 80, 170),
               "oft": (200, 140, 20)}
    img = Image.new("RGB", (width, height), "white")
    d = ImageDraw.Draw(img)
    xs = [0, report["short_steps"], report["long_steps"]]
    panel_w, m = width // 2, 45
    for p, (key, title) in enumerate((("fit_iou", "new tasks (B): IoU"), ("kept_iou", "known tasks (A): IoU"))):
        x0 = p * panel_w
        d.rectangle([x0 + m, m, x0 + panel_w - 15, height - m], outline="black")
        d.text((x0 + m, 12), title, fill="black")
        for v in (0.0, 0.5, 1.0):
            y = height - m - v * (height - 2 * m)
            d.text((x0 + 8, y - 6), f"{v:.1f}", fill="black")
        for s in xs:
            d.text((x0 + m + s / xs[-1] * (panel_w - m - 30) - 8, height - m + 6), str(s), fill="black")
        for i, (method, r) in enumerate(report["results"]["no_replay"]["common_lr"].items()):
            vals = [report["base"][key], r["short"][key]["mean"], r["long"][key]["mean"]]
            pts = [(x0 + m + s / xs[-1] * (panel_w - m - 30), height - m - v * (height - 2 * m))
                   for s, v in zip(xs, vals)]
            d.line(pts, fill=colours[method], width=2)
            for x, y in pts:
                d.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colours[method])
            n = len(report["results"]["no_replay"]["common_lr"])  # the legend low on the right, where no line runs
            d.text((x0 + panel_w - 110, height - m - 8 - 14 * (n - i)), method, fill=colours[method])
    d.text((width // 2 - 60, height - 16), "training steps", fill="black")
    return img


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except UserError as e:  # bad input (a --dinov2-model that is not DINOv2): one line, exit 2
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
