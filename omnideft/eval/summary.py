"""Per-group summaries of a score table (mean, sample std, n per metric; set metrics as one value) written as
summary.json and a Markdown table (mean ± std, arrows for the better direction)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from omnideft.eval.metrics import METRICS
from omnideft.eval.scoring import ScoreTable
from omnideft.files import write_text_atomic

SCHEMA = "omnideft.scores/1"


def group_stats(table: ScoreTable, set_values: dict[str, dict[str, float]],
                names: set[str]) -> dict[str, dict[str, dict]]:
    """{group: {metric: {"mean", "std", "n"}}} over the rows in `names`; std is None for one value, infinite values
    (PSNR of identical images) and set metrics (n = images)."""
    rows = [row for name, row in table.rows.items() if name in names]
    groups: dict[str, dict[str, list[float]]] = {}
    for row in rows:
        for m in METRICS:
            if row.get(m):
                groups.setdefault(row["group"], {}).setdefault(m, []).append(float(row[m]))
    out: dict[str, dict[str, dict]] = {}
    for group, metrics in groups.items():
        for m, vals in metrics.items():
            finite = [v for v in vals if not math.isnan(v)]
            arr = np.asarray(finite, dtype=np.float64)
            mean = float(arr.mean()) if len(arr) else float("nan")
            std = float(arr.std(ddof=1)) if len(arr) > 1 and np.isfinite(arr).all() else None
            out.setdefault(group, {})[m] = {"mean": mean, "std": std, "n": len(finite)}
    for group, metrics in set_values.items():
        n = sum(1 for row in rows if row.get("group") == group)
        for m, v in metrics.items():
            out.setdefault(group, {})[m] = {"mean": v, "std": None, "n": n}
    return {g: {m: out[g][m] for m in METRICS if m in out[g]} for g in sorted(out)}


def json_safe(x):
    """JSON has no inf/nan: inf -> "inf", nan -> null."""
    if isinstance(x, float) and not math.isfinite(x):
        return None if math.isnan(x) else ("inf" if x > 0 else "-inf")
    if isinstance(x, dict):
        return {k: json_safe(v) for k, v in x.items()}
    if isinstance(x, list):
        return [json_safe(v) for v in x]
    return x


def json_float(x) -> float:
    return float("nan") if x is None else float(x)


def fmt(stat: dict | None) -> str:
    """'0.9171 ± 0.0587', '90.34 ± 2.12', '1904 ± 334': decimals by magnitude; 'n/a' when undefined."""
    if not stat:
        return ""
    mean = json_float(stat["mean"])
    if math.isnan(mean):
        return "n/a"
    if not math.isfinite(mean):
        return str(mean)
    digits = 4 if abs(mean) < 10 else 2 if abs(mean) < 1000 else 0
    std = stat.get("std")
    return f"{mean:.{digits}f}" + ("" if std is None else f" ± {json_float(std):.{digits}f}")


def header(metric: str) -> str:
    return f"{metric} {'↑' if METRICS[metric].higher_is_better else '↓'}"


def markdown_table(groups: dict[str, dict[str, dict]], title: str) -> str:
    metrics = [m for m in METRICS if any(m in g for g in groups.values())]
    lines = [f"# {title}", "", "| group | n | " + " | ".join(header(m) for m in metrics) + " |",
             "|---|---|" + "---|" * len(metrics)]
    for group, stats in groups.items():
        n = max((s["n"] for s in stats.values()), default=0)
        lines.append(f"| {group} | {n} | " + " | ".join(fmt(stats.get(m)) for m in metrics) + " |")
    lines += ["", "mean ± sample std over images; fid is one value per group. "
              "Formulas, libraries and models: docs/eval.md."]
    return "\n".join(lines) + "\n"


def write_summary(out_dir: Path, table: ScoreTable, set_values: dict, info: dict, title: str,
                  names: set[str]) -> list[Path]:
    """summary.json = info (command, versions, settings...) + metric descriptions + per-group stats of the rows in
    `names` (this run's items); summary.md = the table. Returns the written paths (the CSV is already saved)."""
    groups = group_stats(table, set_values, names)
    used = [m for m in METRICS if any(m in g for g in groups.values())]
    doc = {"schema": SCHEMA, **info,
           "metrics": {m: {"higher_is_better": METRICS[m].higher_is_better, "formula": METRICS[m].summary}
                       for m in used},
           "groups": groups}
    return [write_text_atomic(out_dir / "summary.json", json.dumps(json_safe(doc), indent=2) + "\n"),
            write_text_atomic(out_dir / "summary.md", markdown_table(groups, title))]
