"""The latent cache: `omnideft cache-latents` writes it, a run with `data.latents` gives bit-identical losses and the
same adapter as a run that encodes, and a cache of another VAE or image size, or one missing images, is refused."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from omnideft.errors import UserError
from omnideft.families.omnigen.model import load_omnigen
from omnideft.flow.latents import vae_fingerprint
from omnideft.shapes.shards import write_task_shards
from omnideft.train.cache_latents import cache_latents
from omnideft.train.loop import train
from omnideft.train.recipe import load_recipe
from tests.helpers import assert_one_line_error, run_cli_here


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return write_task_shards(tmp_path_factory.mktemp("shards"), ["fill"], n_samples=12, size=32, seed=0, shard_size=6,
                             n_examples=1)


def _recipe(shards, out, *extra):
    # condition dropout 0.25: some rows drop their input images, whose posteriors must then not be drawn
    return load_recipe(None, ["model.name=tiny", f"data.shards=[{shards}]", "data.max_image_size=32",
                              "data.condition_dropout=0.25", "adapter.rank=4", "train.max_steps=5",
                              "train.batch_size=2", "train.lr=1e-2", "train.checkpoint_every=0",
                              f"output.dir={out}", *extra])


def _losses(out):
    return [json.loads(x)["loss"] for x in (out / "metrics.jsonl").read_text().splitlines()]


def test_cached_run_has_bit_identical_losses_and_adapter(shards, tmp_path):
    proc = run_cli_here("cache-latents", str(shards), "--model", "tiny", "--out", str(tmp_path / "cache"),
                   "--max-image-size", "32", "--no-progress")
    assert proc.returncode == 0, proc.stderr[-2000:]
    meta = json.loads((tmp_path / "cache" / "cache.json").read_text())
    assert meta["max_image_size"] == 32 and meta["entries"] == meta["written"] > 12  # inputs and outputs
    assert meta["vae"] == vae_fingerprint(load_omnigen("tiny").vae)
    entry = next((tmp_path / "cache").glob("??/*.safetensors"))
    tensors = load_file(entry)
    assert tensors["mean"].shape == (1, 4, 4, 4) and (tensors["std"] > 0).all()

    encoded = train(_recipe(shards, tmp_path / "encoded"), progress=False)
    cached = train(_recipe(shards, tmp_path / "cached", f"data.latents={tmp_path / 'cache'}"), progress=False)
    assert _losses(tmp_path / "cached") == _losses(tmp_path / "encoded")  # exact, not approximate
    assert len(set(_losses(tmp_path / "encoded"))) == 5
    a, b = load_file(encoded / "adapter_model.safetensors"), load_file(cached / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    again = cache_latents([str(shards)], "tiny", str(tmp_path / "cache"), 32, progress=False)
    assert again["written"] == 0 and again["entries"] == meta["entries"]  # a second run only adds what is new


def test_foreign_and_stale_caches_are_refused(shards, tmp_path):
    other_vae = tmp_path / "seed1"
    cache_latents([str(shards)], "tiny", str(other_vae), 32, seed=1, progress=False)
    with pytest.raises(UserError, match="another VAE"):
        train(_recipe(shards, tmp_path / "a", f"data.latents={other_vae}"), progress=False)
    with pytest.raises(UserError, match="cropped to 32 px.*data.max_image_size is 64"):
        train(_recipe(shards, tmp_path / "b", f"data.latents={other_vae}", "model.seed=1", "data.max_image_size=64"),
              progress=False)
    partial = tmp_path / "partial"
    first_shard = sorted(shards.glob("**/*.tar"))[0]
    cache_latents([str(first_shard)], "tiny", str(partial), 32, progress=False)
    with pytest.raises(UserError, match="stale"):
        train(_recipe(shards, tmp_path / "c", f"data.latents={partial}", "train.max_steps=12"), progress=False)
    assert not (tmp_path / "c" / "adapter").exists()
    with pytest.raises(UserError, match="not a latent cache"):
        train(_recipe(shards, tmp_path / "d", f"data.latents={tmp_path}"), progress=False)
    proc = run_cli_here("cache-latents", str(shards), "--model", "tiny", "--out", str(other_vae),
                        "--max-image-size", "32")
    assert_one_line_error(proc, "another VAE or image size")
