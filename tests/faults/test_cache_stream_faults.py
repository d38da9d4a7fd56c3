"""Faults of the latent cache (`omnideft cache-latents`, `data.latents`) and of streamed shards' manifests: a shard
replaced after caching, damaged or truncated entries, an unreadable cache.json, an --out the verb did not write, a
killed cache-latents, and manifests whose fields are wrong. Each is one line naming the culprit, before step 1, with
nothing written into the run folder and nothing of the user's deleted."""

from __future__ import annotations

import functools
import json
import os
import shutil
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file, save_file

import omnideft.flow.vae as flow_vae
from omnideft.data.format.check import check_dir
from omnideft.data.sources import resolve_sources
from omnideft.errors import UserError
from omnideft.flow.latents import LatentCache
from omnideft.shapes.shards import write_task_shards
from omnideft.train.cache_latents import cache_latents
from tests.faults.conftest import BASE
from tests.helpers import assert_one_line_error, run_cli_here


@pytest.fixture(scope="module")
def cached(fault_shards, tmp_path_factory):
    """(shards, cache): a copy of the fault shards (12 samples in 2 shards) and a latent cache made from them."""
    root = tmp_path_factory.mktemp("cached")
    shards = shutil.copytree(fault_shards, root / "shards")
    cache_latents([str(shards)], "tiny", str(root / "cache"), 32, progress=False)
    return shards, root / "cache"


def _copy(cached, tmp_path) -> tuple[Path, Path]:
    return (shutil.copytree(cached[0], tmp_path / "shards"),  # copytree keeps mtimes: shards still match
            shutil.copytree(cached[1], tmp_path / "cache"))


def _train(shards, cache, out):
    return run_cli_here("train", *BASE, f"data.shards=[{shards}]", f"data.latents={cache}", f"output.dir={out}")


def _open(shards, cache) -> LatentCache:
    """The trainer's check, without a model: the VAE fingerprint is the one the cache records."""
    meta = json.loads((cache / "cache.json").read_text())
    return LatentCache(cache, meta["vae"], 32, resolve_sources([str(shards)]))


def _an_entry(cache) -> Path:
    return sorted(cache.glob("??/*.safetensors"))[0]


def test_a_shard_replaced_after_caching_stops_before_step_1(cached, tmp_path):
    shards, cache = _copy(cached, tmp_path)
    first = sorted(shards.glob("*.tar"))[0]
    os.utime(first, ns=(1, 1))  # same bytes, another mtime (a copy without -p): recognised by its sha256
    _open(shards, cache)
    other = write_task_shards(tmp_path / "other", ["fill"], n_samples=6, size=32, seed=1, shard_size=6, n_examples=1)
    shutil.copyfile(sorted(other.glob("*.tar"))[0], first)  # images the cache has never seen
    proc = _train(shards, cache, tmp_path / "run")
    assert_one_line_error(proc, f"not made from shard {first}", "stale")
    assert not (tmp_path / "run").exists()


def _times_1e4(path: Path) -> None:
    tensors = load_file(path)
    save_file({k: v * 1e4 for k, v in tensors.items()}, str(path))


def _finite_random_bytes(path: Path) -> None:
    """The tensor bytes replaced by random float32 values, every one finite: the file still parses."""
    data = bytearray(path.read_bytes())
    header = 8 + int.from_bytes(data[:8], "little")
    data[header:] = np.random.default_rng(0).normal(0, 3, (len(data) - header) // 4).astype(np.float32).tobytes()
    path.write_bytes(bytes(data))


def _truncated(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-100])


@pytest.mark.parametrize("damage", [_times_1e4, _finite_random_bytes, _truncated])
def test_a_damaged_entry_is_one_line_naming_it_and_cache_latents_repairs_it(cached, tmp_path, damage):
    shards, cache = _copy(cached, tmp_path)
    entry = _an_entry(cache)
    damage(entry)
    proc = _train(shards, cache, tmp_path / "run")
    assert_one_line_error(proc, f"entry {entry} is damaged")
    assert not (tmp_path / "run").exists()
    again = cache_latents([str(shards)], "tiny", str(cache), 32, progress=False)  # the verb's own cache: repaired
    assert again["written"] == 1
    _open(shards, cache)


@pytest.mark.parametrize("content", [b"\x00\x9f{garbage", b'["not", "an", "object"]',
                                     b'{"schema": "omnideft.latents/2"}'])
def test_a_cache_json_that_cannot_be_read_is_one_line_naming_it(cached, tmp_path, content):
    shards, cache = _copy(cached, tmp_path)
    (cache / "cache.json").write_bytes(content)
    proc = _train(shards, cache, tmp_path / "run")
    assert_one_line_error(proc, str(cache / "cache.json"))
    assert not (tmp_path / "run").exists()
    proc = run_cli_here("cache-latents", str(shards), "--model", "tiny", "--out", str(cache), "--max-image-size", "32")
    assert_one_line_error(proc, str(cache / "cache.json"))  # not repaired blindly: it may not be this verb's
    assert (cache / "cache.json").read_bytes() == content


def test_cache_latents_refuses_an_out_it_did_not_write(cached, tmp_path):
    shards = cached[0]
    a_file = tmp_path / "notes.txt"
    a_file.write_text("keep me\n")
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(b"jpeg")
    for out, needle in ((a_file, "is a file"), (folder, "not empty and not a latent cache")):
        proc = run_cli_here("cache-latents", str(shards), "--model", "tiny", "--out", str(out), "--max-image-size",
                            "32", "--no-progress")
        assert_one_line_error(proc, f"--out {out}", needle)
    assert a_file.read_text() == "keep me\n" and [p.name for p in folder.iterdir()] == ["a.jpg"]


def test_a_killed_cache_latents_is_refused_for_training_then_finished_by_a_rerun(cached, tmp_path, monkeypatch):
    shards, cache = cached[0], tmp_path / "cache"
    calls = []

    def dies_on_the_fourth_image(*args):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt  # as a kill would stop it: three entries on disk, cache.json unfinished
        return posterior(*args)

    posterior = flow_vae.posterior
    monkeypatch.setattr(flow_vae, "posterior", dies_on_the_fourth_image)
    with pytest.raises(KeyboardInterrupt):
        cache_latents([str(shards)], "tiny", str(cache), 32, progress=False)
    monkeypatch.undo()
    with pytest.raises(UserError, match="is unfinished"):
        _open(shards, cache)
    meta = cache_latents([str(shards)], "tiny", str(cache), 32, progress=False)  # its own folder: continued
    full = json.loads((cached[1] / "cache.json").read_text())
    assert meta["written"] == full["entries"] - 3 and meta["entry_sha256"].keys() == full["entry_sha256"].keys()
    _open(shards, cache)


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def bad_manifests(tmp_path_factory):
    """(base URL, root): folders each holding a manifest.json with one wrong field, served on 127.0.0.1."""
    root = tmp_path_factory.mktemp("manifests")
    good = {"format": "omnideft.manifest/1", "shards": [{"name": "shapes-000000.tar", "samples": 12}]}
    cases = {"negative": -12, "text": "twelve", "missing": None}
    for case, samples in cases.items():
        manifest = json.loads(json.dumps(good))
        if samples is None:
            del manifest["shards"][0]["samples"]
        else:
            manifest["shards"][0]["samples"] = samples
        (root / case).mkdir()
        (root / case / "manifest.json").write_text(json.dumps(manifest))
    (root / "list").mkdir()
    (root / "list" / "manifest.json").write_text(json.dumps(good["shards"]))
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", root
    server.shutdown()
    thread.join()
    server.server_close()


@pytest.mark.parametrize("case, needle", [("negative", "shards[0].samples (shapes-000000.tar) must be a non-negative "
                                                       "integer, got -12"),
                                          ("text", "shards[0].samples (shapes-000000.tar) must be a non-negative "
                                                   "integer, got 'twelve'"),
                                          ("missing", "shards[0].samples (shapes-000000.tar) must be a non-negative "
                                                      "integer, got None"),
                                          ("list", "the manifest must be a JSON object, got a list")])
def test_a_streamed_manifest_with_a_wrong_field_is_one_line(bad_manifests, tmp_path, case, needle):
    base, root = bad_manifests
    for shards in (f"{base}/{case}/", f"{base}/{case}/shapes-{{000000..000000}}.tar"):  # folder; brace pattern
        proc = run_cli_here("train", *BASE, f"data.shards=['{shards}']", f"output.dir={tmp_path / 'run'}")
        assert_one_line_error(proc, f"manifest {base}/{case}/manifest.json: {needle}")
        assert not (tmp_path / "run").exists()
    [(_, report)] = check_dir(root / case)  # the local checker applies the same validation
    assert report.problems == [f"manifest.json: {needle}"]
