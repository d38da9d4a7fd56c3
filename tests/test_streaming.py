"""Streamed shards (data/stream.py) from an HTTP server on 127.0.0.1 serving real test shards: a killed and resumed
run ends with the same adapter as an uninterrupted one; readers get whole, disjoint shards; a position restarts at
its exact sample (skip-ahead inside a shard); a connection cut mid-shard is retried; an unreachable URL stops with
one line naming it; pipe: and brace patterns read the same samples."""

from __future__ import annotations

import functools
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch
from safetensors.torch import load_file

import omnideft.data.stream as stream
from omnideft.data.indexed import ShardIndex
from omnideft.data.loader import index_sources
from omnideft.data.sources import resolve_sources
from omnideft.data.stream import StreamIndex
from omnideft.errors import UserError
from omnideft.shapes.shards import write_task_shards
from omnideft.train.loop import train
from omnideft.train.recipe import load_recipe
from tests.helpers import assert_one_line_error, free_port, run_cli, run_cli_here


class _Handler(SimpleHTTPRequestHandler):
    cut_once: set = set()  # request paths whose first answer stops halfway

    def log_message(self, *args):  # quiet
        pass

    def copyfile(self, source, outputfile):
        if self.path in self.cut_once:
            self.cut_once.discard(self.path)
            data = source.read()
            outputfile.write(data[: len(data) // 2])  # Content-Length says more: the client sees a cut stream
            self.close_connection = True
            return
        super().copyfile(source, outputfile)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(local split folder, its URL): 12 samples in 3 shards of 4, served over HTTP on 127.0.0.1."""
    split = write_task_shards(tmp_path_factory.mktemp("shards"), ["fill"], n_samples=12, size=32, seed=0,
                              shard_size=4, n_examples=1)
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Handler, directory=str(split.parent)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield split, f"http://127.0.0.1:{server.server_address[1]}/{split.name}/"
    server.shutdown()
    thread.join()
    server.server_close()


def _recipe(shards: str, out, *extra):
    return load_recipe(None, ["model.name=tiny", f"data.shards=[{shards}]", "data.max_image_size=32",
                              "adapter.rank=4", "train.max_steps=8", "train.batch_size=2", "train.lr=1e-2",
                              "train.checkpoint_every=3", f"output.dir={out}", *extra])


def test_killed_and_resumed_streamed_run_equals_uninterrupted(served, tmp_path):
    _, url = served
    whole = train(_recipe(url, tmp_path / "whole"), progress=False)
    killed = run_cli("train", "model.name=tiny", f"data.shards=[{url}]", "data.max_image_size=32", "adapter.rank=4",
                     "train.max_steps=8", "train.batch_size=2", "train.lr=1e-2", "train.checkpoint_every=3",
                     f"output.dir={tmp_path / 'resumed'}", "--no-progress", env={"OMNIDEFT_FAULT": "kill@5"})
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert (tmp_path / "resumed" / "checkpoints" / "step-0000003").is_dir()  # 6 samples in: mid second shard
    resumed = train(_recipe(url, tmp_path / "resumed"), progress=False, resume="latest")
    a, b = load_file(whole / "adapter_model.safetensors"), load_file(resumed / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    local = train(_recipe(str(served[0]), tmp_path / "local"), progress=False)  # indexed order: other samples
    assert not all(torch.equal(a[k], v) for k, v in load_file(local / "adapter_model.safetensors").items())


def test_readers_get_whole_disjoint_shards_and_positions_restart_exactly(served):
    split, url = served
    source = resolve_sources([url])[0]
    assert source.sizes == [4, 4, 4] and source.urls[0].startswith(url)
    local = ShardIndex(sorted(str(p) for p in split.glob("*.tar")))
    keys_of = {}
    for i, ref in enumerate(local.samples):
        keys_of[ref.key] = (ref.shard, i)
    index = StreamIndex(source.urls, source.sizes)
    index.assign(2, seed=0, source=0, pattern=url)
    seen = {0: [], 1: []}
    for draw in range(6):  # an epoch is 12 samples; reader 0 gets 2 shards or 1 of the 3
        for reader in (0, 1):
            p = draw * 2 + reader
            shard, k = index.locate(p)
            if draw < sum(index.sizes[s] for s in stream._reader_shards(3, 2, reader, 0, 0, 0)):
                sample = index.read(p)
                assert keys_of[sample["__key__"]][0] == shard  # the sample comes from the shard located
                assert sample["json"] == local.read(keys_of[sample["__key__"]][1])["json"]
                seen[reader].append(shard)
    assert set(seen[0]).isdisjoint(seen[1]) and set(seen[0]) | set(seen[1]) == {0, 1, 2}
    fresh = StreamIndex(source.urls, source.sizes)  # a resumed reader: skip ahead inside the shard
    fresh.assign(2, seed=0, source=0, pattern=url)
    assert fresh.read(6)["__key__"] == index.read(6)["__key__"]


def test_cut_stream_is_retried_and_pipe_and_brace_patterns_read_the_same(served, monkeypatch):
    split, url = served
    monkeypatch.setattr(stream, "BACKOFF_S", 0.01)
    source = resolve_sources([url])[0]
    name = source.urls[1].rsplit("/", 1)[-1]
    _Handler.cut_once.add(f"/{split.name}/{name}")
    index = StreamIndex(source.urls, source.sizes)
    keys = [index.read(p)["__key__"] for p in range(12)]  # one reader: all three shards in the epoch's order
    assert not _Handler.cut_once  # the cut happened, and the retry read the shard whole
    assert len(set(keys)) == 12
    brace = index_sources(resolve_sources([url + "shapes-{000000..000002}.tar"]))[0]
    pipe = index_sources(resolve_sources([f"pipe:cat {split}/shapes-{{000000..000002}}.tar"]))[0]
    assert brace.sizes == pipe.sizes == [4, 4, 4]  # manifest beside the shards; pipe: counted
    assert [brace.read(p)["__key__"] for p in range(12)] == [pipe.read(p)["__key__"] for p in range(12)] == keys


def test_unreachable_url_retries_then_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(stream, "BACKOFF_S", 0.01)
    dead = f"http://127.0.0.1:{free_port()}/train/"
    with pytest.raises(UserError, match=f"shard source {dead}manifest.json: reading failed 4 times with back-off"):
        resolve_sources([dead])
    proc = run_cli_here("train", "model.name=tiny", f"data.shards=[{dead}]", f"output.dir={tmp_path / 'run'}",
                   "--no-progress")
    assert_one_line_error(proc, dead, "with back-off")
    assert not (tmp_path / "run").exists()
