"""Benchmark: the DEFT paper's central claim at CPU scale — does DEFT keep what a pretrained model knew better than
LoRA while it learns something new?

The pretrained `small` OmniGen knows family A of the shape-world tasks; adapters teach it family B (tasks it never
saw) from in-context training samples (omnideft/demo/study.py: the same data, queries and noise for every run).
Methods at equal rank, steps and learning rate: LoRA, DEFT (`relu` and `qr` projectors) and PaRa, each for SEEDS
seeds at two lengths (SHORT steps, and LONG = 4 x SHORT: the SHORT adapter is the checkpoint of the LONG run).
Each method is also run at its own best learning rate from a small sweep (SWEEP, one seed, SHORT steps, picked by
the held-out denoising loss on family B), reported separately.

Measured per adapter: fit on B (task IoU, colour error, held-out denoising loss) and retention of A (the same on A's
held-out queries and samples). Prints a table of mean ± std over seeds, writes retention.png (metric vs steps, one
line per method) and retention.json into OUT (default benchmarks/out/retention), states plainly whether DEFT keeps A
better than LoRA at this scale and by how much, and prints one JSON object on its last line:
{"deft_relu": {"fit_B": IoU on B, "retain_A": IoU on A, ...}, ...} (LONG runs at the common learning rate).

    python benchmarks/retention.py [OUT] [--quick]      # about 25 minutes on 2 idle cores; --quick: a smoke run
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from PIL import Image, ImageDraw  # noqa: E402

from omnideft.demo.study import AdaptationStudy  # noqa: E402

METHODS = {
    "lora": ["adapter.method=lora"],
    "deft_relu": ["adapter.method=deft", "adapter.projector=relu"],
    "deft_qr": ["adapter.method=deft", "adapter.projector=qr"],
    "para": ["adapter.method=para"],
}
RANK = 8
LR = 2e-3
SWEEP = (1e-3, 2e-3, 4e-3)
SHORT = 50
SEEDS = (0, 1, 2)
QUICK = {"SHORT": 1, "SEEDS": (0,), "SWEEP": (2e-3,), "queries": 1, "retention_queries": 1, "sampler_steps": 2,
         "denoising_samples": 4}
METRICS = (("fit", "iou"), ("fit", "colour_error"), ("fit", "denoising_loss"),
           ("kept", "iou"), ("kept", "colour_error"), ("kept", "denoising_loss"))


def main(argv: list[str]) -> dict:
    quick = "--quick" in argv
    args = [a for a in argv if a != "--quick"]
    out = Path(args[0] if args else Path(__file__).parent / "out" / "retention")
    short, seeds, sweep = (QUICK["SHORT"], QUICK["SEEDS"], QUICK["SWEEP"]) if quick else (SHORT, SEEDS, SWEEP)
    t0 = time.perf_counter()
    sizes = {k: QUICK[k] for k in ("queries", "retention_queries", "sampler_steps", "denoising_samples")} if quick \
        else {"queries": 8, "retention_queries": 2}
    study = AdaptationStudy(out / "data", seed=0, **sizes)
    study.write_shards()
    scored: dict = {}

    def score(adapter: Path | None) -> dict:  # a run reused by the sweep and the best-lr runs is scored once
        if adapter not in scored:
            scored[adapter] = flatten(study.score(adapter))
        return scored[adapter]

    base = score(None)
    log(f"base: {fmt(base)}")

    def run(method: str, lr: float, seed: int, steps: int, checkpoint_every: int = 0) -> Path:
        name = f"{method}-lr{lr:g}-seed{seed}-steps{steps}"
        folder = out / "runs" / name
        if not (folder / "adapter" / "adapter_model.safetensors").is_file():
            study.train(folder, [*METHODS[method], f"adapter.rank={RANK}", f"train.lr={lr}"], steps, seed=seed,
                        checkpoint_every=checkpoint_every)
        return folder

    best_lr = {}
    for method in METHODS:  # the sweep: one seed, SHORT steps, judged on family B's held-out denoising loss
        losses = {lr: study.denoising_loss(run(method, lr, 0, short) / "adapter") for lr in sweep}
        best_lr[method] = min(losses, key=losses.get)
        log(f"sweep {method}: " + ", ".join(f"lr {lr:g}: {v:.4f}" for lr, v in losses.items()) +
            f" -> {best_lr[method]:g}")

    results: dict = {"common_lr": {}, "best_lr": {}}
    for label, lrs in (("common_lr", {m: LR for m in METHODS}), ("best_lr", best_lr)):
        for method, lr in lrs.items():
            per_length: dict = {"short": [], "long": []}
            for seed in seeds:
                folder = run(method, lr, seed, 4 * short, checkpoint_every=short)
                per_length["short"].append(score(folder / "checkpoints" / f"step-{short:07d}"))
                per_length["long"].append(score(folder / "adapter"))
                log(f"{label} {method} lr {lr:g} seed {seed}: long {fmt(per_length['long'][-1])}")
            results[label][method] = {"lr": lr, **{k: aggregate(v) for k, v in per_length.items()}}

    report = {"base": base, "rank": RANK, "short_steps": short, "long_steps": 4 * short, "seeds": list(seeds),
              "common_lr": LR, "best_lr": best_lr, **results, "seconds": round(time.perf_counter() - t0, 1)}
    report["verdict"] = verdict(report)
    out.mkdir(parents=True, exist_ok=True)
    (out / "retention.json").write_text(json.dumps(report, indent=2) + "\n")
    plot(report).save(out / "retention.png")
    print(table(report))
    print(report["verdict"])
    summary = {m: {"fit_B": r["long"]["fit_iou"]["mean"], "retain_A": r["long"]["kept_iou"]["mean"],
                   "fit_B_denoising_loss": r["long"]["fit_denoising_loss"]["mean"],
                   "retain_A_denoising_loss": r["long"]["kept_denoising_loss"]["mean"],
                   "fit_B_short": r["short"]["fit_iou"]["mean"], "retain_A_short": r["short"]["kept_iou"]["mean"]}
               for m, r in results["common_lr"].items()}
    summary["base"] = {"fit_B": base["fit_iou"], "retain_A": base["kept_iou"]}
    print(json.dumps(summary))
    return report


def flatten(scores) -> dict:
    return {f"{part}_{metric}": getattr(scores, part)[metric] for part, metric in METRICS}


def aggregate(rows: list[dict]) -> dict:
    return {k: {"mean": statistics.fmean(r[k] for r in rows),
                "std": statistics.stdev(r[k] for r in rows) if len(rows) > 1 else 0.0} for k in rows[0]}


def fmt(row: dict) -> str:
    return (f"B IoU {row['fit_iou']:.3f} loss {row['fit_denoising_loss']:.4f} | "
            f"A IoU {row['kept_iou']:.3f} loss {row['kept_denoising_loss']:.4f}")


def table(report: dict) -> str:
    cols = [f"{part}_{metric}" for part, metric in METRICS]
    head = ["lr", "run", "steps", *(c.replace("fit_", "B ").replace("kept_", "A ") for c in cols)]
    lines = ["| method | " + " | ".join(head) + " |", "|---" * (len(head) + 1) + "|"]
    base = report["base"]
    lines.append("| base | - | - | 0 | " + " | ".join(f"{base[c]:.3f}" for c in cols) + " |")
    for label in ("common_lr", "best_lr"):
        for method, r in report[label].items():
            for length in ("short", "long"):
                steps = report["short_steps"] if length == "short" else report["long_steps"]
                cells = [f"{r[length][c]['mean']:.3f} ± {r[length][c]['std']:.3f}" for c in cols]
                lines.append(f"| {method} | {r['lr']:g} | {label} | {steps} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def verdict(report: dict) -> str:
    """Does DEFT keep family A better than LoRA? A difference counts when it exceeds the seeds' spread; what each
    paid for it on B is said alongside, at the common lr and at each method's best lr."""
    base = report["base"]["kept_iou"]
    parts = []
    for name in ("deft_relu", "deft_qr"):
        d, lora = report["common_lr"][name]["long"], report["common_lr"]["lora"]["long"]
        diff = d["kept_iou"]["mean"] - lora["kept_iou"]["mean"]
        noise = (d["kept_iou"]["std"] ** 2 + lora["kept_iou"]["std"] ** 2) ** 0.5
        better = "better than" if diff > noise else ("worse than" if -diff > noise else "no differently from")
        best, best_lora = report["best_lr"][name], report["best_lr"]["lora"]
        parts.append(
            f"{name} keeps family A {better} LoRA after {report['long_steps']} steps at equal rank and lr: A IoU "
            f"{d['kept_iou']['mean']:.3f} vs {lora['kept_iou']['mean']:.3f} (base {base:.3f}; difference "
            f"{diff:+.3f}, seed spread {noise:.3f}), fitting B to IoU {d['fit_iou']['mean']:.3f} vs "
            f"{lora['fit_iou']['mean']:.3f}; each at its best lr ({best['lr']:g} vs {best_lora['lr']:g}): A IoU "
            f"{best['long']['kept_iou']['mean']:.3f} vs {best_lora['long']['kept_iou']['mean']:.3f}, B IoU "
            f"{best['long']['fit_iou']['mean']:.3f} vs {best_lora['long']['fit_iou']['mean']:.3f}")
    return "; ".join(parts) + "."


def plot(report: dict, width: int = 900, height: int = 380) -> Image.Image:
    """Two panels (IoU on the new tasks, IoU on the known tasks) vs training steps; one line per method."""
    colours = {"lora": (200, 60, 40), "deft_relu": (40, 90, 200), "deft_qr": (40, 160, 80), "para": (150, 80, 170)}
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
        for i, (method, r) in enumerate(report["common_lr"].items()):
            vals = [report["base"][key], r["short"][key]["mean"], r["long"][key]["mean"]]
            pts = [(x0 + m + s / xs[-1] * (panel_w - m - 30), height - m - v * (height - 2 * m))
                   for s, v in zip(xs, vals)]
            d.line(pts, fill=colours[method], width=2)
            for x, y in pts:
                d.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colours[method])
            d.text((x0 + panel_w - 110, m + 8 + 14 * i), method, fill=colours[method])
    d.text((width // 2 - 60, height - 16), "training steps", fill="black")
    return img


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
