"""Random access to the samples of webdataset tar shards through an index of tar headers.

webdataset's iterable pipeline cannot restart at a position, and its indexed reader (`wids`) is not part of the
webdataset release we depend on. Tar headers are 512-byte blocks in front of each member, so listing them costs
a few reads per sample, never the image bytes; a sample is then a handful of `seek` + `read` calls.
Only local (or shared-filesystem) paths can be indexed.
"""

from __future__ import annotations

import os
import tarfile
from collections import Counter
from dataclasses import dataclass

from omnideft.errors import UserError


@dataclass(frozen=True)
class SampleRef:
    shard: int
    key: str
    members: tuple  # ((field, offset, size), ...)


class ShardIndex:
    """All samples of one source's shards, in shard order then tar order. A file that is not a tar stops the run
    naming it; the unreadable tail of a truncated shard is counted in `problems` and its earlier samples kept."""

    def __init__(self, urls: list[str]):
        self.urls = list(urls)
        self.samples: list[SampleRef] = []
        self.problems: Counter = Counter()
        for i, url in enumerate(self.urls):  # local paths: data.sources refuses remote URLs
            self.samples.extend(self._scan(i, url))

    def __len__(self) -> int:
        return len(self.samples)

    def _scan(self, shard: int, url: str) -> list[SampleRef]:
        groups: dict[str, list] = {}
        if not os.path.isfile(url):
            raise UserError(f"shard {url} is not a file")
        try:
            with tarfile.open(url, mode="r:") as tar:
                for m in tar:  # tarfile seeks over member data: only headers are read
                    if not m.isfile():
                        continue
                    base = m.name.rsplit("/", 1)[-1]
                    if "." not in base or base.startswith("."):
                        continue
                    key, field = base.split(".", 1)
                    prefix = m.name[: len(m.name) - len(base)]
                    groups.setdefault(prefix + key, []).append((field, m.offset_data, m.size))
        except (tarfile.TarError, OSError) as exc:
            if not groups:  # not a tar at all: a wrong file or a broken copy, worth stopping for
                raise UserError(f"shard {url} is not a readable tar file ({type(exc).__name__}); "
                                "`omnideft check-shards` lists the damage") from None
            self.problems[f"truncated shard ({type(exc).__name__})"] += 1  # keep the samples before the damage
        return [SampleRef(shard, key.rsplit("/", 1)[-1], tuple(members)) for key, members in groups.items()]

    def read(self, i: int) -> dict:
        """The raw sample as webdataset gives it: {"__key__": key, field: bytes, ...}."""
        ref = self.samples[i]
        raw = {"__key__": ref.key, "__url__": self.urls[ref.shard]}
        with open(self.urls[ref.shard], "rb") as f:
            for field, offset, size in ref.members:
                f.seek(offset)
                raw[field] = f.read(size)
        return raw
