"""The resumable data order: disjoint readers, exact resume from any batch (with and without workers), mixing
weights realised, size buckets, corrupt samples skipped and counted."""

import zlib

import pytest

from omnideft.data.loader import ResumableBatches, drawn_per_source, index_sources
from omnideft.data.order import MixedOrder
from omnideft.data.sources import resolve_sources
from omnideft.shapes.shards import write_task_shards


@pytest.fixture(scope="module")
def two_sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("mix")
    a = write_task_shards(root / "a", ["fill"], n_samples=12, size=32, seed=0, shard_size=5, n_examples=1)
    b = write_task_shards(root / "b", ["fill"], n_samples=9, size=32, seed=1, shard_size=4, n_examples=1)
    return [{"path": str(a), "weight": 3.0}, {"path": str(b), "weight": 1.0}]


def _build(examples):
    return {"sizes": {_size(e) for e in examples}, "ids": [tuple(e.order_id) for e in examples]}


def _size(ex):  # two buckets, so partial buckets exist at every checkpoint
    return (32, 32) if zlib.crc32(ex.key.encode()) % 2 else (32, 48)


def _stream(entries, resume=None, workers=0, rank=0, world=1, batch=3):
    sources = resolve_sources(entries)
    ds = ResumableBatches(sources, index_sources(sources), seed=5, batch_size=batch, size_of=_size, build=_build,
                          rank=rank, world=world, num_workers=workers, resume=resume)
    return sources, iter(ds.loader())


def _take(it, n, states=None, consumed=0):
    out = []
    for _ in range(n):
        b, (reader, st) = next(it)
        if states is not None:
            states[reader] = st
        out.append(b["ids"])
    return out


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_from_any_batch_continues_the_same_sequence(two_sources, workers):
    _, it = _stream(two_sources, workers=workers)
    full = _take(it, 14)
    for k in (1, 5, 8):
        states = {}
        _, it = _stream(two_sources, workers=workers)
        head = _take(it, k, states)
        _, it2 = _stream(two_sources, resume={"readers": states, "consumed": k}, workers=workers)
        assert head + _take(it2, 14 - k) == full, k


def test_readers_are_disjoint_within_an_epoch():
    sizes, readers = [10], 3
    orders = [MixedOrder(sizes, [1.0], seed=1, reader=j, readers=readers) for j in range(readers)]
    seen = []
    for o in orders:
        for _ in range(4):
            p = o.next_position(0)
            if p < 10:
                seen.append(o.item(0, p))
    assert sorted(seen) == list(range(10))


def test_mixing_weights_are_realised(two_sources):
    states = {}
    sources, it = _stream(two_sources, batch=1)
    _take(it, 400, states)
    drawn = drawn_per_source(sources, states)
    share = drawn[sources[0].pattern] / sum(drawn.values())
    assert share == pytest.approx(0.75, abs=0.05), drawn


def test_batches_share_one_output_size(two_sources):
    _, it = _stream(two_sources)
    assert all(len(next(it)[0]["sizes"]) == 1 for _ in range(8))
