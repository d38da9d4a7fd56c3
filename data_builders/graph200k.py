"""Read Graph200K rows from any of its three forms, giving encoded image bytes per hub column name.

1. a `datasets` directory written by `save_to_disk` (`dataset_dict.json` with split folders, or one split folder);
2. a hub id such as `VisualCloze/Graph200K` (needs network; the `datasets` cache is used);
3. the tree written by VisualCloze's `processing.py`: `<dir>/<split>/data.json` plus one JPEG per image.

Images are read without decoding (Arrow structs `{bytes, path}`), so picking rows is cheap and decoding happens
once, in the worker that builds the sample.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from omnideft.errors import UserError

from .images import SkipSample, read_bytes

STYLE_KINDS = ("InstantStyle", "ReduxStyle")
MAX_VARIANTS = 6  # read style/FillEdit indices defensively: processing.py and DATASET.md disagree (3 vs 4, 5 vs 6)
# data.json (processing.py) renames a few hub columns; map them back so one column vocabulary serves both forms.
TREE_RENAMES = {"reference": "ref", "mask": "qwen_2_5_mask", "bbox": "qwen_2_5_bounding_box"}
META_COLUMNS = ("description", "quality_assessment", "collection")


class ArrowRows:
    """A Graph200K split held by `datasets` (memory-mapped Arrow)."""

    def __init__(self, dataset: Any, origin: str):
        self.origin = origin
        if getattr(dataset, "_indices", None) is not None:
            dataset = dataset.flatten_indices()
        self.table = dataset.data
        self.columns = set(self.table.column_names)

    def __len__(self) -> int:
        return self.table.num_rows

    def image(self, row: int, column: str) -> bytes | None:
        if column not in self.columns:
            return None
        value = self.table.column(column)[row].as_py()
        if value is None:
            return None
        if isinstance(value, dict):
            if value.get("bytes") is not None:
                return value["bytes"]
            return read_bytes(value["path"]) if value.get("path") else None
        raise SkipSample("bad_metadata", f"column {column} row {row} is not an image")

    def meta(self, row: int) -> dict:
        return {c: self.table.column(c)[row].as_py() for c in META_COLUMNS if c in self.columns}


class TreeRows:
    """VisualCloze's preprocessed tree: a JSON list of entries whose `condition` holds absolute image paths."""

    def __init__(self, data_json: Path):
        self.origin = str(data_json)
        self.base = data_json.parent
        try:
            entries = json.loads(data_json.read_text())
        except ValueError as exc:
            raise UserError(f"{data_json}: expected a JSON list of VisualCloze entries, found invalid JSON ({exc})")
        if not isinstance(entries, list) or (entries and not isinstance(entries[0], dict)):
            raise UserError(f"{data_json}: expected a JSON list of objects, found {type(entries).__name__}")
        if entries and "condition" not in entries[0]:
            raise UserError(f"{data_json}: expected entries with a 'condition' dict, found keys {sorted(entries[0])}")
        self.entries = entries
        self.columns = set().union(*(tree_columns(e["condition"]) for e in entries[:50])) if entries else set()

    def __len__(self) -> int:
        return len(self.entries)

    def image(self, row: int, column: str) -> bytes | None:
        path = tree_columns(self.entries[row]["condition"]).get(column)
        return None if not path else read_bytes(self._locate(path))

    def _locate(self, path: str) -> Path:
        """Absolute paths from another machine: fall back to <data.json dir>/<folder>/<file>."""
        p = Path(path)
        if p.is_file():
            return p
        return self.base / p.parent.name / p.name

    def meta(self, row: int) -> dict:
        return {c: self.entries[row].get(c) for c in META_COLUMNS}


def tree_columns(condition: dict) -> dict[str, str]:
    """Flatten a data.json `condition` dict into hub column names -> path."""
    cols: dict[str, str] = {}
    for key, value in condition.items():
        if isinstance(value, str):
            cols[TREE_RENAMES.get(key, key)] = value
        elif key in STYLE_KINDS and isinstance(value, dict):
            for k, p in enumerate(value.get("image_path") or []):
                cols[f"{key}_image_{k}"] = p
            for k, p in enumerate(value.get("style_path") or []):
                cols[f"{key}_ref_{k}"] = p
        elif key == "FillEdit" and isinstance(value, dict):
            for k, p in enumerate(value.get("image_path") or []):
                cols[f"FillEdit_image_{k}"] = p
    return {k: v for k, v in cols.items() if v}


def open_rows(src: str, split: str):
    """Open Graph200K from a save_to_disk dir, a data.json tree, or a hub id; UserError names what was found."""
    path = Path(src)
    if path.is_dir():
        if (path / "dataset_dict.json").is_file():
            return _arrow_split(path, split)
        if (path / "state.json").is_file() and (path / "dataset_info.json").is_file():
            return _checked(ArrowRows(_load_from_disk(path), str(path)), path)
        for candidate in (path / split / "data.json", path / "data.json"):
            if candidate.is_file():
                return _checked(TreeRows(candidate), candidate)
        found = sorted(p.name for p in path.iterdir())[:8]
        raise UserError(f"--src {path}: expected a Graph200K save_to_disk directory (dataset_dict.json) or a "
                        f"VisualCloze tree ({split}/data.json), found {found or 'an empty directory'}")
    if path.is_file() and path.name.endswith(".json"):
        return _checked(TreeRows(path), path)
    if path.exists() or src.count("/") != 1:
        raise UserError(f"--src {src}: expected a directory or a hub id like VisualCloze/Graph200K, found "
                        f"{'a file' if path.exists() else 'nothing at that path'}")
    return _checked(ArrowRows(_load_hub(src, split), src), src)


def _load_from_disk(path: Path):
    import datasets  # pyarrow and friends load only for Graph200K, not for every builder that imports this module

    return datasets.load_from_disk(str(path))


def _arrow_split(path: Path, split: str):
    dsd = _load_from_disk(path)
    if split not in dsd:
        raise UserError(f"--src {path}: expected split {split!r}, found splits {sorted(dsd)}")
    return _checked(ArrowRows(dsd[split], str(path)), path)


def _load_hub(hub_id: str, split: str):
    import datasets  # see _load_from_disk

    try:
        return datasets.load_dataset(hub_id, split=split)
    except Exception as exc:  # offline, unknown id, missing split: all become one line for the user
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"--src {hub_id}: could not load the hub dataset split {split!r} ({first})") from None


def _checked(rows, where) -> Any:
    if "target" not in rows.columns:
        raise UserError(f"--src {where}: expected Graph200K columns (at least 'target'), found "
                        f"{sorted(rows.columns)[:12]}")
    return rows
