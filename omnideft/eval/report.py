"""Write a metric table as CSV, JSON and Markdown (temp name, then rename)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from omnideft.files import write_text_atomic


def write_tables(results: dict[str, dict[str, float]], out_stem: str | Path, metric: str) -> list[Path]:
    """`results` = {row (model): {column (task): value}}. Writes OUT.csv, OUT.json, OUT.md."""
    stem = Path(out_stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    columns = sorted({c for row in results.values() for c in row if c != "all"}) + ["all"]
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["model", *columns])
    for name, row in results.items():
        w.writerow([name, *(f"{row[c]:.6f}" if c in row else "" for c in columns)])
    md = [f"| model | {' | '.join(columns)} |", "|---" * (len(columns) + 1) + "|"]
    for name, row in results.items():
        md.append(f"| {name} | " + " | ".join(f"{row[c]:.4f}" if c in row else "" for c in columns) + " |")
    texts = {".csv": buf.getvalue(), ".json": json.dumps({"metric": metric, "results": results}, indent=2) + "\n",
             ".md": f"{metric} (lower is better)\n\n" + "\n".join(md) + "\n"}
    return [write_text_atomic(stem.with_suffix(ext), text) for ext, text in texts.items()]
