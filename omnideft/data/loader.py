"""Training batches that can resume exactly: examples in `MixedOrder`, grouped by output size, built by a
caller-supplied function, prefetched by background workers.

The loader yields `(batch, ReaderState)`: the state of the reader that made the batch *after* making it (order
state, the positions waiting in partial size buckets, skip counts). The trainer keeps the last state per reader;
restoring those states and the number of batches consumed reproduces the batch sequence exactly. With W workers the
DataLoader takes batches from workers 0, 1, …, W-1 in turn, so after k batches worker 0 must continue the stream of
slot k mod W. A reader's error (e.g. a source with no readable sample) is raised by the loader as a one-line
UserError, never mixed into a batch.
"""

from __future__ import annotations

import json
import signal
from collections import Counter
from typing import Callable, Iterator, NamedTuple

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from omnideft.data.format.schema import SampleError
from omnideft.data.indexed import ShardIndex
from omnideft.data.order import MixedOrder, OrderState
from omnideft.data.shards import Example, decode_sample
from omnideft.data.sources import ShardSource
from omnideft.data.stream import StreamIndex
from omnideft.errors import UserError


def index_sources(sources: list[ShardSource]) -> list[ShardIndex | StreamIndex]:
    """An indexed reader per local source, a streamed one (data/stream.py) per remote source."""
    indexes = [ShardIndex(s.urls) if s.sizes is None else StreamIndex(s.urls, s.sizes) for s in sources]
    for s, ix in zip(sources, indexes):
        if len(ix) == 0:
            raise UserError(f"shards of {s.pattern!r} hold no sample ({dict(ix.problems) or 'empty tar files'})")
    return indexes


def sources_have_cameras(indexes: list[ShardIndex]) -> bool:
    """Whether the first sample of any source carries a camera record (for `camera.encoding: auto`)."""
    for ix in indexes:
        try:
            if json.loads(ix.read(0).get("json", b"{}")).get("camera"):
                return True
        except (OSError, ValueError):  # unreadable first sample: decided by the other sources
            continue
    return False


class ReaderState(NamedTuple):
    """Where reader `reader` stands after the batch it came with: {"order", "pending", "skipped"}."""
    reader: int
    state: dict


class _ReaderFailure(NamedTuple):
    """A reader's UserError on its way out of a worker process (DataLoader would re-raise it with a traceback)."""
    message: str


class ResumableBatches(IterableDataset):
    """Endless batches for one process (`rank` of `world`); readers = world x max(num_workers, 1)."""

    def __init__(self, sources: list[ShardSource], indexes: list[ShardIndex], *, seed: int, batch_size: int,
                 size_of: Callable[[Example], tuple], build: Callable[[list[Example]], dict], rank: int = 0,
                 world: int = 1, num_workers: int = 0, resume: dict | None = None):
        self.sources, self.indexes = sources, indexes
        self.seed, self.batch_size, self.size_of, self.build = seed, batch_size, size_of, build
        self.rank, self.world, self.slots = rank, world, max(num_workers, 1)
        self.num_workers = num_workers
        for i, (source, index) in enumerate(zip(sources, indexes)):
            if isinstance(index, StreamIndex):  # whole shards per reader, by (seed, source, epoch)
                index.assign(world * self.slots, seed, i, source.pattern)
        resume = resume or {}
        self.reader_states = {int(k): v for k, v in resume.get("readers", {}).items()}
        self.rotation = resume.get("consumed", 0) % self.slots

    def loader(self) -> Iterator[tuple[dict, ReaderState]]:
        """Endless `(batch, reader_state)`; raises UserError when a reader fails."""
        # An explicit generator: creating the iterator must not consume the global torch RNG.
        loader = DataLoader(self, batch_size=None, num_workers=self.num_workers, collate_fn=_identity,
                            prefetch_factor=4 if self.num_workers else None, persistent_workers=False,
                            worker_init_fn=_leave_stop_signals_to_the_trainer if self.num_workers else None,
                            generator=torch.Generator().manual_seed(self.seed))
        for item in loader:
            if isinstance(item, _ReaderFailure):
                raise UserError(item.message)
            yield item

    def __iter__(self) -> Iterator[tuple[dict, ReaderState] | _ReaderFailure]:
        info = get_worker_info()
        if info is not None:
            torch.set_num_threads(1)  # workers decode and tokenize; the training process owns the cores
        slot = ((info.id if info else 0) + self.rotation) % self.slots
        reader = self.rank * self.slots + slot
        try:
            yield from self._batches(reader, self.reader_states.get(reader, {}))
        except UserError as exc:  # raised again by loader() in the training process, as one line
            yield _ReaderFailure(str(exc))

    def _batches(self, reader: int, state: dict) -> Iterator[tuple[dict, ReaderState]]:
        order = MixedOrder([len(ix) for ix in self.indexes], [s.weight for s in self.sources], self.seed, reader,
                           self.world * self.slots, OrderState.from_json(state.get("order", {})),
                           streamed={i for i, ix in enumerate(self.indexes) if isinstance(ix, StreamIndex)})
        skipped = Counter(state.get("skipped", {}))
        buckets: dict[tuple, list[Example]] = {}
        for source, position in state.get("pending", []):  # partial buckets at the time of the checkpoint
            ex = self._example(order, source, position, skipped)
            if ex is not None:
                buckets.setdefault(self.size_of(ex), []).append(ex)
        failures = [0] * len(self.sources)
        while True:
            source = order.next_source()
            position = order.next_position(source)
            ex = self._example(order, source, position, skipped)
            if ex is None:
                failures[source] += 1
                if failures[source] >= len(self.indexes[source]):
                    raise UserError(f"shards of {self.sources[source].pattern!r} hold no readable sample "
                                    f"(skipped: {dict(skipped)})")
                continue
            failures[source] = 0
            bucket = buckets.setdefault(self.size_of(ex), [])
            bucket.append(ex)
            if len(bucket) < self.batch_size:
                continue
            del buckets[self.size_of(ex)]
            batch = self.build(bucket)
            pending = [list(e.order_id) for b in buckets.values() for e in b]
            yield batch, ReaderState(reader, {"order": order.state().to_json(), "pending": pending,
                                              "skipped": dict(skipped)})

    def _example(self, order: MixedOrder, source: int, position: int, skipped: Counter) -> Example | None:
        index = self.indexes[source]
        try:
            ex = decode_sample(index.read(order.item(source, position)))
        except SampleError as exc:
            skipped[str(exc).split(": ", 1)[-1].split(" (")[0]] += 1
            return None
        except OSError as exc:
            skipped[f"unreadable member ({type(exc).__name__})"] += 1
            return None
        ex.order_id = (source, position)
        return ex


def _identity(x):
    return x


def _leave_stop_signals_to_the_trainer(worker_id: int) -> None:
    """SIGTERM / SIGUSR1 ask the training process to checkpoint and stop after its step, then it ends its loader
    workers itself. A worker killed by the same signal (torch elastic's agent and `scancel` signal every process,
    not one) failed that step with "DataLoader worker is killed by signal: Terminated" (measured)."""
    for sig in (signal.SIGTERM, signal.SIGUSR1):
        signal.signal(sig, signal.SIG_IGN)


def drawn_per_source(sources: list[ShardSource], reader_states: dict) -> dict:
    """Samples drawn from each source so far, summed over this process's readers."""
    totals = [0] * len(sources)
    for state in reader_states.values():
        for i, c in enumerate(state.get("order", {}).get("counts", [])):
            totals[i] += c
    return {s.pattern: totals[i] for i, s in enumerate(sources)}
