"""Which sample comes next: a pure function of (seed, reader, draw counts), so a run can stop anywhere and resume
at the same place.

- Sources are drawn by weight from a seeded generator per reader (`mix` state).
- Source s is read in a fresh seeded permutation per epoch, the same for every reader. Its c-th draw by reader j
  of n is global position p = c·n + j: epoch p // len(s), item permutation_epoch[p % len(s)]. Readers are
  therefore disjoint within an epoch whatever the number of shards, and no sample state needs saving.
- A streamed source (data/stream.py) cannot be read in a permutation: its position goes to the stream reader as
  is, which maps it to whole shards per reader, read front to back (`streamed`).
- A reader's whole state is the generator state and one counter per source (`OrderState`, plain JSON).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from functools import lru_cache


@dataclass
class OrderState:
    mix: list | None = None  # random.getstate() as JSON lists; None = fresh
    counts: list = field(default_factory=list)  # draws per source

    def to_json(self) -> dict:
        return {"mix": self.mix, "counts": list(self.counts)}

    @classmethod
    def from_json(cls, d: dict) -> "OrderState":
        return cls(d.get("mix"), list(d.get("counts", [])))


class MixedOrder:
    def __init__(self, sizes: list[int], weights: list[float], seed: int, reader: int, readers: int,
                 state: OrderState | None = None, streamed: set[int] = frozenset()):
        self.sizes, self.weights, self.seed = sizes, weights, seed
        self.streamed = streamed
        self.reader, self.readers = reader, readers
        self.rng = random.Random(f"mix-{seed}-{reader}")
        state = state or OrderState()
        if state.mix is not None:
            self.rng.setstate(rng_state_from_json(state.mix))
        self.counts = list(state.counts) or [0] * len(sizes)
        if len(self.counts) != len(sizes):
            raise ValueError(f"data state has {len(self.counts)} sources, recipe has {len(sizes)}")

    def state(self) -> OrderState:
        return OrderState(rng_state_to_json(self.rng.getstate()), list(self.counts))

    def next_source(self) -> int:
        return self.rng.choices(range(len(self.sizes)), self.weights)[0]

    def next_position(self, source: int) -> int:
        """Global position of this reader's next draw from `source` (counts it)."""
        p = self.counts[source] * self.readers + self.reader
        self.counts[source] += 1
        return p

    def item(self, source: int, position: int) -> int:
        if source in self.streamed:
            return position
        n = self.sizes[source]
        return _permutation(self.seed, source, position // n, n)[position % n]


@lru_cache(maxsize=8)
def _permutation(seed: int, source: int, epoch: int, n: int) -> tuple:
    order = list(range(n))
    random.Random(f"order-{seed}-{source}-{epoch}").shuffle(order)
    return tuple(order)


def rng_state_to_json(x):
    """A generator state (nested tuples, numpy arrays) as JSON lists; `rng_state_from_json` turns it back."""
    if isinstance(x, (tuple, list)):
        return [rng_state_to_json(v) for v in x]
    return x.tolist() if hasattr(x, "tolist") else x


def rng_state_from_json(x):
    return tuple(rng_state_from_json(v) for v in x) if isinstance(x, list) else x
