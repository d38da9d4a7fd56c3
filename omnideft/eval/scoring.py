"""Score predictions with registry metrics, batch by batch, into a resumable per-image CSV.

An item is one prediction with what its metrics read (references, prompt, condition). Rows already in the CSV are
not scored again, so an interrupted run (or a run that stopped at an unreadable image) keeps its rows and resumes.
The CSV is rewritten under a temporary name and renamed after every batch. Set metrics (FID) are computed per group
at the end of each run from all items of the group.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from omnideft.errors import UserError
from omnideft.eval.metrics import METRICS, MetricBatch, MetricOptions, PairMetric, SetMetric, metric_class
from omnideft.files import write_text_atomic
from omnideft.images import load_image
from omnideft.progress import progress_bar

KEY_COLUMNS = ("name", "group")


@dataclass
class ScoreItem:
    name: str  # row key, unique in a CSV
    pred: Path
    refs: tuple[Path, ...] = ()  # several references: the row holds the mean over them (DreamBench)
    prompt: str | None = None
    cond: Path | None = None
    group: str = "all"  # the table row this item counts towards (task, subject)
    columns: dict[str, str] = field(default_factory=dict)  # extra CSV columns, e.g. seed


class ScoreTable:
    """The per-image CSV: name, group, extra columns, then one column per metric (empty = not scored)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.rows: dict[str, dict[str, str]] = {}
        self.columns: list[str] = list(KEY_COLUMNS)
        if self.path.is_file():
            with open(self.path, newline="") as f:
                reader = csv.DictReader(f)
                if reader.fieldnames is None or reader.fieldnames[0] != "name":
                    raise UserError(f"{self.path} is not a score table written by omnideft (remove it to start over)")
                self.columns = list(reader.fieldnames)
                for row in reader:
                    self.rows[row["name"]] = row

    def has(self, name: str, metric: str) -> bool:
        return bool(self.rows.get(name, {}).get(metric))

    def value(self, name: str, metric: str) -> float:
        text = self.rows.get(name, {}).get(metric) or "nan"
        return float(text)

    def touch(self, item: ScoreItem) -> dict[str, str]:
        """The item's row, created (with its group and extra columns) if new."""
        row = self.rows.setdefault(item.name, {"name": item.name})
        row["group"] = item.group
        row.update(item.columns)
        self.columns += [c for c in item.columns if c not in self.columns]
        return row

    def put(self, item: ScoreItem, metric: str, value: float) -> None:
        self.touch(item)[metric] = "nan" if math.isnan(value) else repr(round(value, 6))
        if metric not in self.columns:
            self.columns.append(metric)

    def save(self) -> None:
        metric_cols = [m for m in METRICS if m in self.columns]
        cols = [c for c in self.columns if c not in METRICS] + metric_cols
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        for name in sorted(self.rows):
            w.writerow(self.rows[name])
        write_text_atomic(self.path, buf.getvalue())


def check_needs(items: list[ScoreItem], metrics: list[str]) -> None:
    for m in metrics:
        needs = metric_class(m).needs
        for it in items:
            if "ref" in needs and not it.refs:
                raise UserError(f"metric {m} needs a reference image for {it.name} (--ref DIR)")
            if "prompt" in needs and it.prompt is None:
                raise UserError(f"metric {m} needs a prompt for {it.name} (--prompts FILE)")
            if "cond" in needs and it.cond is None and not it.refs:
                raise UserError(f"metric {m} needs a condition or reference image for {it.name} (--cond/--ref)")


def _chunks(seq: list, n: int) -> Iterable[list]:
    for i in range(0, len(seq), max(1, n)):
        yield seq[i:i + n]


def _score_pairs(metric: PairMetric, items: list[ScoreItem], images: dict[Path, object]) -> list[float]:
    """Per item; with several references the pairs are expanded and the values averaged per item."""
    uses_refs = bool({"ref", "cond"} & set(metric.needs))
    owners, batch = [], MetricBatch(pred=[], ref=[], prompt=[], cond=[])
    for k, it in enumerate(items):
        for ref in (it.refs if uses_refs and it.refs else (it.refs[:1] or (None,))):
            owners.append(k)
            batch.pred.append(images[it.pred])
            batch.ref.append(images[ref] if ref is not None else None)
            batch.prompt.append(it.prompt)
            batch.cond.append(images[it.cond] if it.cond is not None else None)
    values = metric.score(batch)
    sums, counts = [0.0] * len(items), [0] * len(items)
    for k, v in zip(owners, values):
        sums[k] += v
        counts[k] += 1
    return [s / c for s, c in zip(sums, counts)]


def score_items(items: list[ScoreItem], metrics: list[str], options: MetricOptions, table: ScoreTable,
                progress: bool = False) -> dict[str, dict[str, float]]:
    """Scores missing per-image values into `table` (saved after every batch) and returns the set metrics
    {group: {metric: value}}."""
    names = [it.name for it in items]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise UserError(f"duplicate prediction names: {', '.join(dup[:5])}")
    check_needs(items, metrics)
    for it in items:
        table.touch(it)  # every item has a row, even when only set metrics (FID) are asked for
    table.save()
    pair = {m: metric_class(m)(options) for m in metrics if metric_class(m).per_image}
    todo = [it for it in items if any(not table.has(it.name, m) for m in pair)]
    for chunk in progress_bar(list(_chunks(todo, options.batch_size)), desc="score", disable=not progress):
        images = {p: load_image(p) for it in chunk for p in (it.pred, *it.refs, it.cond) if p is not None}
        for m, metric in pair.items():
            missing = [it for it in chunk if not table.has(it.name, m)]
            if missing:
                for it, v in zip(missing, _score_pairs(metric, missing, images)):
                    table.put(it, m, v)
        table.save()
    set_values: dict[str, dict[str, float]] = {}
    for m in metrics:
        if metric_class(m).per_image:
            continue
        for group in dict.fromkeys(it.group for it in items):
            members = [it for it in items if it.group == group]
            metric: SetMetric = metric_class(m)(options)
            refs = list(dict.fromkeys(r for it in members for r in it.refs))
            for chunk in _chunks(members, options.batch_size):
                metric.update([load_image(it.pred) for it in chunk], real=False)
            for chunk in _chunks(refs, options.batch_size):
                metric.update([load_image(r) for r in chunk], real=True)
            set_values.setdefault(group, {})[m] = metric.compute()
    return set_values
