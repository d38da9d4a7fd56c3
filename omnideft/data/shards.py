"""Read contract-1 shards with webdataset into `Example`s: seeded shard order per epoch, seeded shuffle buffer,
weighted mixing of sources, corrupt samples skipped and counted (never fatal)."""

from __future__ import annotations

import io
import json
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterator

import webdataset as wds
from PIL import Image

from omnideft.data.schema import SampleError, validate_meta
from omnideft.data.sources import ShardSource


@dataclass
class Example:
    key: str
    task: str
    instruction: str
    inputs: list[Image.Image]
    output: Image.Image
    weight: float = 1.0
    camera: dict | None = None
    meta: dict = field(default_factory=dict)


def decode_sample(raw: dict) -> Example:
    """webdataset dict (bytes per field) -> Example; raises SampleError naming the problem."""
    key = raw.get("__key__", "?")
    if "json" not in raw:
        raise SampleError(f"sample {key}: no {key}.json member")
    try:
        meta = validate_meta(json.loads(raw["json"]))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SampleError(f"sample {key}: bad json ({exc})") from None
    inputs = [_image(raw, key, e["member"]) for e in meta["inputs"]]
    output = _image(raw, key, meta["output"]["member"])
    return Example(key, meta["task"], meta["instruction"], inputs, output, float(meta.get("weight", 1.0)),
                   meta.get("camera"), meta)


def _image(raw: dict, key: str, member: str) -> Image.Image:
    data = raw.get(member)
    if data is None:
        raise SampleError(f"sample {key}: member {member} missing")
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except Exception as exc:  # PIL raises many types for corrupt data
        raise SampleError(f"sample {key}: member {member} does not decode ({type(exc).__name__})") from None
    return img.convert("RGB")


def sources_have_cameras(sources: list[ShardSource]) -> bool:
    """Whether the first sample of any source carries a camera record (for `camera.encoding: auto`)."""
    for source in sources:
        ds = wds.WebDataset(source.urls[:1], shardshuffle=False, nodesplitter=_all_shards, empty_check=False,
                            handler=wds.ignore_and_continue)
        for raw in ds:
            try:
                if json.loads(raw["json"]).get("camera"):
                    return True
            except (KeyError, json.JSONDecodeError, UnicodeDecodeError):
                pass
            break
    return False


class ShardStream:
    """Endless stream of Examples from several sources mixed by weight; deterministic for (seed, rank)."""

    def __init__(self, sources: list[ShardSource], seed: int = 0, shuffle_buffer: int = 256):
        self.sources = sources
        self.seed = seed
        self.shuffle_buffer = shuffle_buffer
        self.skipped: Counter = Counter()
        self.drawn: Counter = Counter()

    def __iter__(self) -> Iterator[Example]:
        rng = random.Random(self.seed)
        streams = [self._source_stream(i, s) for i, s in enumerate(self.sources)]
        weights = [s.weight for s in self.sources]
        while True:
            i = rng.choices(range(len(streams)), weights)[0]
            ex = next(streams[i])
            self.drawn[self.sources[i].pattern] += 1
            yield ex

    def _source_stream(self, index: int, source: ShardSource) -> Iterator[Example]:
        epoch = 0
        rng = random.Random(f"{self.seed}-{index}")
        buffer: list[Example] = []
        while True:
            urls = list(source.urls)
            random.Random(f"{self.seed}-{index}-{epoch}").shuffle(urls)
            got = 0
            for ex in self._decode(urls):
                got += 1
                buffer.append(ex)
                if len(buffer) >= self.shuffle_buffer:
                    yield buffer.pop(rng.randrange(len(buffer)))
            if got == 0 and not buffer:
                from omnideft.errors import UserError

                raise UserError(f"shards of {source.pattern!r} hold no readable sample "
                                f"(skipped: {dict(self.skipped) or 'none'})")
            epoch += 1
            rng.shuffle(buffer)
            while len(buffer) > self.shuffle_buffer // 2:
                yield buffer.pop()

    def _decode(self, urls: list[str]) -> Iterator[Example]:
        # Ranks read disjoint shards when there are enough; with fewer shards than ranks every rank reads all
        # of them (its own seed still gives it its own order).
        splitter = wds.split_by_node if len(urls) >= _world_size() else _all_shards
        ds = wds.WebDataset(urls, shardshuffle=False, nodesplitter=splitter,
                            workersplitter=wds.split_by_worker, empty_check=False, handler=self._count_error)
        for raw in ds:
            try:
                yield decode_sample(raw)
            except SampleError as exc:
                self.skipped[str(exc).split(": ", 1)[-1].split(" (")[0]] += 1

    def _count_error(self, exc: Exception) -> bool:
        self.skipped[f"unreadable shard ({type(exc).__name__})"] += 1
        return True  # keep going: a corrupt shard member is skipped, not fatal


def _world_size() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _all_shards(urls):
    return urls


def bucket_batches(examples: Iterator[Example], batch_size: int, size_of) -> Iterator[list[Example]]:
    """Group examples sharing one output size (diffusers' OmniGen takes one output tensor per batch)."""
    buckets: dict[tuple[int, int], list[Example]] = {}
    for ex in examples:
        b = buckets.setdefault(size_of(ex), [])
        b.append(ex)
        if len(b) == batch_size:
            yield b
            buckets[size_of(ex)] = []
