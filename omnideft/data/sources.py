"""Resolve `data.shards` entries (globs, directories, {path, weight}; or URLs, data/stream.py) into shard URL lists."""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass

from omnideft.data.stream import is_remote, resolve_stream
from omnideft.errors import UserError
from omnideft.files import TMP_PREFIX


@dataclass
class ShardSource:
    pattern: str
    weight: float
    urls: list[str]
    sizes: list[int] | None = None  # samples per shard of a streamed (remote) source; None: local, indexed

def resolve_sources(entries: list) -> list[ShardSource]:
    if not entries:
        raise UserError("data.shards is empty: give at least one shard glob or directory")
    out = []
    for i, entry in enumerate(entries):
        if isinstance(entry, str):
            pattern, weight = entry, 1.0
        elif isinstance(entry, dict) and "path" in entry:
            pattern, weight = str(entry["path"]), float(entry.get("weight", 1.0))
            unknown = set(entry) - {"path", "weight"}
            if unknown:
                raise UserError(f"data.shards[{i}] has unknown keys {sorted(unknown)}; allowed: path, weight")
        else:
            raise UserError(f"data.shards[{i}] must be a glob string or {{path, weight}}, got {entry!r}")
        if weight <= 0:
            raise UserError(f"data.shards[{i}] weight must be > 0, got {weight}")
        if is_remote(pattern):
            out.append(ShardSource(pattern, weight, *resolve_stream(pattern)))
        else:
            out.append(ShardSource(pattern, weight, _expand(pattern)))
    return out


def _expand(pattern: str) -> list[str]:
    if "://" in pattern:
        raise UserError(f"shard {pattern}: remote shards are read from http(s)://, s3://, gs:// or pipe: URLs")
    path = os.path.expanduser(pattern)
    if os.path.isdir(path):
        urls = sorted(glob.glob(os.path.join(path, "**", "*.tar"), recursive=True))
    else:
        urls = sorted(glob.glob(path, recursive=True))
    urls = [u for u in urls if not os.path.basename(u).startswith(TMP_PREFIX)]  # unfinished shards
    if not urls:
        raise UserError(f"shard glob {pattern!r} matches no .tar file")
    return urls
