"""A quantised frozen base (`model.quantize`): the fused DEFT layer over an int8/fp8 base layer computes exactly what
it computes over that layer's dequantised weight; the tiny model trains over an int8 base close to the bf16 base;
the adapter it saves loads in stock PEFT on the unquantised base; nf4 without CUDA is one line."""

from __future__ import annotations

import json

import pytest
import torch
from optimum.quanto import freeze, qfloat8, qint8, quantize
from peft import PeftModel, get_peft_model_state_dict
from safetensors.torch import load_file
from torch import nn

from omnideft.adapters.fast_deft import deft_linear
from omnideft.adapters.fingerprint import base_fingerprint
from omnideft.adapters.folder import load_adapter
from omnideft.families.omnigen.model import load_omnigen
from omnideft.model.quantize import dense_weight, is_quantized
from omnideft.shapes.shards import write_task_shards
from omnideft.train.loop import train
from omnideft.train.recipe import load_recipe
from tests.helpers import assert_one_line_error, run_cli_here

STEPS = 30
# The int8 base's loss after STEPS steps, relative to the bf16 base's (mean of the last 10 steps): measured 0.3 %
# (the per-row int8 rounding of random tiny weights); stated tolerance 3 %.
LOSS_TOLERANCE = 0.03


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return write_task_shards(tmp_path_factory.mktemp("shards"), ["fill"], n_samples=16, size=32, seed=0, shard_size=8,
                             n_examples=1)


def _recipe(shards, out, *extra):
    return load_recipe(None, ["model.name=tiny", f"data.shards=[{shards}]", "data.max_image_size=32",
                              "adapter.rank=4", f"train.max_steps={STEPS}", "train.batch_size=2", "train.lr=1e-2",
                              "train.checkpoint_every=0", "train.mixed_precision=bf16", f"output.dir={out}", *extra])


@pytest.mark.parametrize("qtype", [qint8, qfloat8], ids=["int8", "fp8"])
def test_fused_deft_over_a_quantised_layer_is_exact_on_its_dequantised_weight(qtype):
    torch.manual_seed(0)
    layer = nn.Sequential(nn.Linear(48, 40, bias=False)).to(torch.bfloat16)
    quantize(layer, weights=qtype)
    freeze(layer)
    weight = layer[0].weight
    assert is_quantized(weight) and weight._data.element_size() == 1
    dense = dense_weight(weight, torch.bfloat16)
    assert not is_quantized(dense) and dense.shape == (40, 48)
    results = []
    for w in (weight, dense):
        x = torch.randn(64, 48, dtype=torch.bfloat16, generator=torch.Generator().manual_seed(1), requires_grad=True)
        p = torch.randn(40, 4, generator=torch.Generator().manual_seed(2), requires_grad=True)
        r = torch.randn(4, 48, generator=torch.Generator().manual_seed(3), requires_grad=True)
        out = deft_linear(x, w, None, p, "qr", r, 1.0)
        out.float().pow(2).sum().backward()
        results.append((out, x.grad, p.grad, r.grad))
    for a, b in zip(*results):
        assert torch.equal(a, b)
    assert results[0][2].abs().sum() > 0  # gradients flow into P and R through the quantised layer


def test_tiny_trains_over_an_int8_base_and_its_adapter_loads_on_the_plain_base(shards, tmp_path):
    bf16 = train(_recipe(shards, tmp_path / "bf16", "model.quantize=bf16"), progress=False)
    int8 = train(_recipe(shards, tmp_path / "int8", "model.quantize=int8"), progress=False)
    losses = {name: [json.loads(x)["loss"] for x in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
              for name in ("bf16", "int8")}
    first, last = {}, {}
    for name, values in losses.items():
        first[name], last[name] = sum(values[:5]) / 5, sum(values[-10:]) / 10
    assert last["int8"] < first["int8"]  # it learns
    assert abs(last["int8"] / last["bf16"] - 1) < LOSS_TOLERANCE, last
    assert losses["int8"] != losses["bf16"]  # the base really was quantised

    base = load_omnigen(str(tmp_path / "int8" / "base"))  # the unquantised (saved full-precision) base
    fingerprint = base_fingerprint(base.transformer)
    meta = json.loads((int8 / "omnideft.json").read_text())
    assert meta["base"]["fingerprint"] == fingerprint  # the quantised base has the plain base's shape
    stock = PeftModel.from_pretrained(base.transformer, str(int8))
    saved = load_file(int8 / "adapter_model.safetensors")
    loaded = get_peft_model_state_dict(stock)
    assert loaded.keys() == saved.keys() and all(torch.equal(loaded[k], saved[k]) for k in saved)
    assert any(k.endswith("deft_R") and saved[k].abs().sum() > 0 for k in saved)  # trained, not the init
    ours = load_adapter(load_omnigen(str(tmp_path / "bf16" / "base")).transformer, bf16)  # omnideft's loader too
    assert ours is not None


def test_quantised_base_is_smaller_and_nf4_needs_cuda(tmp_path):
    plain = load_omnigen("tiny").transformer
    quantised = load_omnigen("tiny", quantize="int8").transformer
    weights = [m.weight for m in quantised.modules() if hasattr(m, "weight") and is_quantized(m.weight)]
    assert len(weights) == sum(1 for m in plain.modules() if type(m) is nn.Linear)
    assert all(w._data.dtype == torch.int8 for w in weights)
    if torch.cuda.is_available():
        pytest.skip("the refusal is for machines without CUDA")
    proc = run_cli_here("train", "model.name=tiny", "model.quantize=nf4",
                        "data.shards=[recipes/data/tiny_shapes/train]", f"output.dir={tmp_path / 'run'}",
                        "--no-progress")
    assert_one_line_error(proc, "model.quantize=nf4 needs a CUDA GPU")
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_generation_loads_the_base_quantised_after_merging_the_adapter(tmp_path):
    """`generate --quantize int8`: the adapter is merged into the full-precision weights, then every linear of the
    base is stored in int8; the image stays close to the unquantised one and the adapters are fixed from then on."""
    from omnideft.errors import UserError
    from omnideft.families.generator import FamilyGenerator as Generator
    from omnideft.families.omnigen.model import save_base
    from tests.studio_world import random_adapter

    save_base(load_omnigen("tiny"), tmp_path / "base")
    adapter = str(random_adapter(tmp_path / "deft", str(tmp_path / "base"), method="deft", seed=2))
    images = {}
    for kind in (None, "int8"):
        g = Generator.from_pretrained(str(tmp_path / "base"), [adapter], device="cpu", quantize=kind)
        images[kind] = g("a red cube", steps=3, seed=1, height=32, width=32, output_type="np")[0]
    layers = [m for m in g.transformer.modules() if isinstance(m, nn.Linear)]
    assert layers and all(is_quantized(m.weight) for m in layers)
    bare = Generator.from_pretrained(str(tmp_path / "base"), device="cpu")("a red cube", steps=3, seed=1, height=32,
                                                                          width=32, output_type="np")[0]
    # measured: int8 moves the image by 0.015 (floats in [0, 1]); the adapter itself moves it by 0.59
    assert abs(images["int8"] - images[None]).max() <= 0.05
    assert abs(images[None] - bare).max() > 0.3
    with pytest.raises(UserError, match="quantize=int8 keeps the adapters"):
        g.set_adapters([])
