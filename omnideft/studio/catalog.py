"""Held-out shards for the studio: their samples grouped by task, and the camera views they carry.

Samples are found with the trainer's tar-header index (data/indexed.py) and only their `KEY.json` is read up front;
images are decoded (data/shards.py) when a preset is loaded.
"""

from __future__ import annotations

import glob
import json
from collections import defaultdict
from pathlib import Path

from omnideft.camera.record import record_vector
from omnideft.data.format.schema import SampleError
from omnideft.data.indexed import ShardIndex
from omnideft.data.shards import Example, decode_sample
from omnideft.data.sources import resolve_sources
from omnideft.errors import UserError

MAX_VIEWS = 500  # camera views listed from one set of shards


def camera_string(vector) -> str:
    """The 11 numbers as `--camera` takes them; repr keeps every float exact through parse_camera."""
    return ",".join(repr(float(x)) for x in vector)


class ShardCatalog:
    """The samples of some shard globs/directories. `problems` holds one line per unreadable pattern or sample."""

    def __init__(self, patterns: list[str]):
        self.patterns = list(patterns)
        self.problems: list[str] = []
        self.index: ShardIndex | None = None
        self.metas: list[dict | None] = []
        self.by_task: dict[str, list[int]] = defaultdict(list)
        urls: list[str] = []
        for pattern in self.patterns:
            try:
                urls += resolve_sources([pattern])[0].urls
            except UserError as exc:
                self.problems.append(f"examples: {exc}")
        if not urls:
            return
        try:
            self.index = ShardIndex(urls)
        except UserError as exc:
            self.problems.append(f"examples: {exc}")
            return
        for i in range(len(self.index)):
            meta = self._meta(i)
            self.metas.append(meta)
            if meta is not None:
                self.by_task[meta["task"]].append(i)
        if not self.by_task:
            self.problems.append(f"examples: no readable sample in {', '.join(self.patterns)}")

    def _meta(self, i: int) -> dict | None:
        ref = self.index.samples[i]
        member = [(offset, size) for field, offset, size in ref.members if field == "json"]
        if not member:
            return None
        with open(self.index.urls[ref.shard], "rb") as f:
            f.seek(member[0][0])
            raw = f.read(member[0][1])
        try:
            meta = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None
        return meta if isinstance(meta, dict) and isinstance(meta.get("task"), str) else None

    @property
    def tasks(self) -> list[str]:
        return sorted(self.by_task)

    def example(self, task: str, k: int) -> Example:
        """The k-th sample of `task` (cycling), decoded."""
        if task not in self.by_task:
            raise UserError(f"no held-out sample of task {task!r} (tasks: {', '.join(self.tasks) or 'none'})")
        indices = self.by_task[task]
        i = indices[k % len(indices)]
        try:
            return decode_sample(self.index.read(i))
        except SampleError as exc:
            raise UserError(f"{self.index.urls[self.index.samples[i].shard]}: {exc}") from None

    def camera_views(self) -> dict[str, str]:
        """Label -> camera string of every sample with a camera record (the target's camera), at most MAX_VIEWS."""
        views: dict[str, str] = {}
        for i, meta in enumerate(self.metas):
            if meta is None or not isinstance(meta.get("camera"), dict):
                continue
            try:
                vector = record_vector(meta["camera"])
            except (KeyError, ValueError, TypeError, UserError):
                continue
            views[view_label(meta, self.index.samples[i].key)] = camera_string(vector)
            if len(views) >= MAX_VIEWS:
                break
        return views


def view_label(meta: dict, key: str) -> str:
    """The source image id when the builder recorded one (e.g. the COLMAP image name), else the sample key."""
    ids = (meta.get("source") or {}).get("ids") or []
    return str(ids[-1]) if ids else key


def recipe_shard_patterns(recipe: dict | None, adapter_folder: Path) -> list[str]:
    """The shard patterns of the recipe that trained an adapter, as given or relative to its run folder."""
    out = []
    for entry in ((recipe or {}).get("data") or {}).get("shards") or []:
        pattern = entry if isinstance(entry, str) else str((entry or {}).get("path", ""))
        if not pattern:
            continue
        for candidate in (Path(pattern), adapter_folder.parent / pattern):
            if candidate.exists() or glob.glob(str(candidate)):
                out.append(str(candidate))
                break
    return out
