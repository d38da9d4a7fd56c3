"""`omnideft bench --compare DIR_A DIR_B ...`: the paper-style table of several runs of one protocol (or folder
scores): per task, one row per run, `mean ± std` per metric, the best run of each column in bold (by the metric's
direction); compare.md, compare.csv, compare.json and a bar chart compare.png."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

from omnideft.bench.chart import bar_chart
from omnideft.errors import UserError
from omnideft.eval.metrics import METRICS
from omnideft.eval.summary import SCHEMA, fmt, json_float, json_safe
from omnideft.files import write_text_atomic
from omnideft.images import save_image_atomic

MAX_PANELS = 32


def load_run(folder: str) -> dict:
    path = Path(folder) / "summary.json"
    if not path.is_file():
        raise UserError(f"--compare {folder}: no summary.json (finish `omnideft bench` or `omnideft eval` there)")
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"--compare {folder}: summary.json is not valid JSON ({exc})") from None
    if doc.get("schema") != SCHEMA:
        raise UserError(f"--compare {folder}: summary.json is not an omnideft score summary")
    return doc


def unique_labels(runs: list[dict], folders: list[str]) -> list[str]:
    labels = [r.get("label") or Path(f).name for r, f in zip(runs, folders)]
    return [f"{lab} ({Path(f).name})" if labels.count(lab) > 1 else lab for lab, f in zip(labels, folders)]


def best_runs(stats: list[dict | None], higher: bool) -> set[int]:
    """Indices of the best mean (ties all count); empty when fewer than two runs have a value."""
    vals = {i: json_float(s["mean"]) for i, s in enumerate(stats) if s}
    vals = {i: v for i, v in vals.items() if not math.isnan(v)}
    if len(vals) < 2:
        return set()
    best = (max if higher else min)(vals.values())
    return {i for i, v in vals.items() if v == best}


def run_compare(folders: list[str], out: str) -> list[Path]:
    if len(folders) < 2:
        raise UserError("--compare needs at least two run folders")
    runs = [load_run(f) for f in folders]
    kinds = {(r.get("kind"), r.get("protocol")) for r in runs}
    if len(kinds) > 1:
        raise UserError("--compare: the runs are of different protocols "
                        f"({', '.join(sorted(str(p or k) for k, p in kinds))}); compare like with like")
    labels = unique_labels(runs, folders)
    direction = {m: meta["higher_is_better"] for r in runs for m, meta in r.get("metrics", {}).items()}
    groups = list(dict.fromkeys(g for r in runs for g in r["groups"]))
    order = {m: i for i, m in enumerate(METRICS)}
    rows, panels = [], []
    md = [f"# {runs[0].get('protocol') or 'scores'}: {' vs '.join(labels)}", ""]
    for group in groups:
        metrics = sorted({m for r in runs for m in r["groups"].get(group, {})}, key=lambda m: order.get(m, 99))
        md += [f"## {group}", "", "| run | " + " | ".join(
            f"{m} {'↑' if direction.get(m, True) else '↓'}" for m in metrics) + " |",
            "|---|" + "---|" * len(metrics)]
        best = {}
        for m in metrics:
            stats = [r["groups"].get(group, {}).get(m) for r in runs]
            best[m] = best_runs(stats, direction.get(m, True))
            if len(panels) < MAX_PANELS:
                panels.append({"title": f"{group.split('/', 1)[-1]}: {m}", "best": best[m],
                               "values": [json_float(s["mean"]) if s else None for s in stats]})
            for i, s in enumerate(stats):
                if s:
                    rows.append({"group": group, "metric": m, "run": labels[i], "folder": folders[i],
                                 "mean": json_float(s["mean"]), "std": s.get("std"), "n": s.get("n"),
                                 "best": i in best[m]})
        for i, r in enumerate(runs):
            cells = []
            for m in metrics:
                text = fmt(r["groups"].get(group, {}).get(m))
                cells.append(f"**{text}**" if i in best[m] and text else text)
            md.append(f"| {labels[i]} | " + " | ".join(cells) + " |")
        md.append("")
    md += ["mean ± sample std over images (fid: one value per task); bold = best of the column.", "", "Runs:", ""]
    md += [f"- {lab}: `{r.get('command', '?')}`" for lab, r in zip(labels, runs)]
    if sum(len({m for r in runs for m in r['groups'].get(g, {})}) for g in groups) > MAX_PANELS:
        md.append(f"\ncompare.png shows the first {MAX_PANELS} task/metric panels.")
    out_dir = Path(out)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=["group", "metric", "run", "folder", "mean", "std", "n", "best"])
    w.writeheader()
    w.writerows(rows)
    doc = {"runs": [{"label": lab, "folder": f, "command": r.get("command")} for lab, f, r in
                    zip(labels, folders, runs)], "rows": rows}
    return [write_text_atomic(out_dir / "compare.md", "\n".join(md) + "\n"),
            write_text_atomic(out_dir / "compare.csv", buf.getvalue()),
            write_text_atomic(out_dir / "compare.json", json.dumps(json_safe(doc), indent=2) + "\n"),
            save_image_atomic(bar_chart(panels, labels), out_dir / "compare.png")]
