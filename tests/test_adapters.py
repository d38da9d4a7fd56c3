"""The standard adapter tests, a matrix over every registered method (a new registry line is picked up here), plus
the DEFT-specific ones."""

import json
import re
from contextlib import contextmanager
from dataclasses import fields

import numpy as np
import pytest
import torch
from peft import PeftModel
from peft.tuners.tuners_utils import BaseTunerLayer
from PIL import Image

from omnideft.adapters import AdapterSpec, apply_adapter, base_fingerprint, load_adapter, save_adapter
from omnideft.adapters.apply import param_groups
from omnideft.adapters.export import adapter_deltas, as_lora, merge_deltas, unload
from omnideft.adapters.optim import build_optimizer
from omnideft.adapters.registry import METHODS as REGISTERED
from omnideft.adapters.registry import get_method
from omnideft.errors import UserError
from omnideft.families.omnigen.collate import collate_prompts
from omnideft.families.omnigen.loss import rectified_flow_loss
from omnideft.families.omnigen.model import load_omnigen
from omnideft.families.omnigen.processor import OmniGenProcessor
from omnideft.families.omnigen.targets import target_modules as omnigen_targets
from omnideft.flow.vae import vae_encode

RANK = 4
# id -> AdapterSpec kwargs: every registered method at its defaults, and variants worth their own run
METHODS = {name: dict(method=name) for name in REGISTERED} | {"deft-qr": dict(method="deft", projector="qr")}
IDENTITY_AT_INIT = [i for i, kw in METHODS.items() if get_method(kw["method"]).identity_init]


@contextmanager
def _seeded(seed: int):
    """PEFT draws init values from torch's global RNG; seed it locally without leaking global state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _spec(method_id: str, **kw) -> AdapterSpec:
    return AdapterSpec(**{"rank": RANK, "targets": "all-linear", **METHODS[method_id], **kw})


def _adapted(spec: AdapterSpec, seed: int = 0):
    comps = load_omnigen("tiny", seed=seed)  # a private base: apply_adapter injects in place
    with _seeded(seed + 100):
        model = apply_adapter(comps.transformer, spec, targets=omnigen_targets)
    return comps, model


def _img(seed: int, size: int = 32) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def batch(tiny):
    """A real two-row batch: one prompt with an input image (left-padded rows differ in length), 32x32 outputs."""
    proc = OmniGenProcessor(tiny.tokenizer, max_image_size=64)
    prompts = [proc.encode("draw a red circle like <img><|image_1|></img>", [_img(1)]), proc.encode("a blue square")]
    cond = collate_prompts(prompts, (32, 32), pad_token_id=2)
    g = torch.Generator().manual_seed(0)
    x1 = vae_encode(tiny.vae, torch.stack([proc.process_image(_img(3)), proc.process_image(_img(4))]), g)
    cond["input_img_latents"] = [vae_encode(tiny.vae, pv, g) for pv in cond["input_pixel_values"]]
    xt = torch.randn(x1.shape, generator=g)
    return {"x1": x1, "cond": cond, "xt": xt, "t": torch.tensor([0.3, 0.8])}


def _predict(model, batch) -> torch.Tensor:
    c = batch["cond"]
    with torch.no_grad():
        return model(hidden_states=batch["xt"], timestep=batch["t"], input_ids=c["input_ids"],
                     input_img_latents=c["input_img_latents"], input_image_sizes=c["input_image_sizes"],
                     attention_mask=c["attention_mask"], position_ids=c["position_ids"], return_dict=False)[0]


def _loss(model, batch) -> torch.Tensor:  # same t and noise every call: a fixed objective
    return rectified_flow_loss(model, batch["x1"], batch["cond"], torch.Generator().manual_seed(1)).mean()


def _train(model, spec, batch, steps: int, lr: float) -> list[float]:
    model.train()
    opt = build_optimizer(model, spec, lr, betas=(0.9, 0.99))
    losses = []
    for _ in range(steps):
        loss = _loss(model, batch)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    model.eval()
    return losses


def _adapted_layers(model, method_id: str) -> dict:
    """Adapted layers (modules with a base_layer) of the base transformer, each checked to belong to the method."""
    method = get_method(METHODS[method_id]["method"])
    layers = {n: m for n, m in model.get_base_model().named_modules() if hasattr(m, "base_layer")}
    assert all(method.owns(m) for m in layers.values())
    return layers


@pytest.mark.parametrize("preset,per_layer", [("attn", 4), ("all-linear", 6)])
@pytest.mark.parametrize("method_id", list(METHODS))
def test_adapted_modules_per_preset(method_id, preset, per_layer):
    comps, model = _adapted(_spec(method_id, targets=preset))
    base = model.get_base_model()
    layers = _adapted_layers(model, method_id)
    assert len(layers) == per_layer * base.config.num_layers
    assert set(layers) == set(omnigen_targets(load_omnigen("tiny").transformer, preset))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    prefixes = get_method(METHODS[method_id]["method"]).param_prefixes
    assert trainable and all(any(part.startswith(prefixes) for part in n.split(".")) for n in trainable)
    groups = param_groups(model, _spec(method_id), lr=1.0)
    assert sum(len(g["params"]) for g in groups) == len(trainable)


@pytest.mark.parametrize("preset", ["attn", "all-linear"])
@pytest.mark.parametrize("method_id", ["lora", "deft", "deft-qr", "para"])
def test_rank_r_parameter_counts(method_id, preset):
    comps, model = _adapted(_spec(method_id, targets=preset))
    lin = [m.get_base_layer() for m in _adapted_layers(model, method_id).values()]
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    n_train = sum(p.numel() for p in trainable.values())
    if method_id == "para":  # only P (out x r)
        assert n_train == sum(RANK * m.out_features for m in lin)
        assert all("deft_P" in n for n in trainable)
    else:  # P+R or B+A: r x (in + out)
        assert n_train == sum(RANK * (m.in_features + m.out_features) for m in lin)
    assert all(any(s in n for s in ("lora_", "deft_")) for n in trainable)


@pytest.mark.parametrize("method_id", IDENTITY_AT_INIT)
def test_identity_init_equals_base_at_step_0(method_id, batch):
    comps = load_omnigen("tiny")
    base_out = _predict(comps.transformer.eval(), batch)
    with _seeded(1):
        model = apply_adapter(comps.transformer, _spec(method_id, init="identity"), targets=omnigen_targets).eval()
    out = _predict(model, batch)
    torch.testing.assert_close(out, base_out, rtol=1e-5, atol=4e-6 * base_out.abs().max().item())


@pytest.mark.parametrize("method_id", ["deft", "deft-qr"])
def test_paper_init_is_not_identity(method_id, batch):
    comps = load_omnigen("tiny")
    base_out = _predict(comps.transformer.eval(), batch)
    with _seeded(1):
        model = apply_adapter(comps.transformer, _spec(method_id, init="paper"), targets=omnigen_targets).eval()
    assert (_predict(model, batch) - base_out).abs().max() > 1e-3 * base_out.abs().max()


def test_param_groups_split_p_and_r():
    spec = _spec("deft-qr", p_lr_ratio=0.25)
    _, model = _adapted(spec)
    names = {id(p): n for n, p in model.named_parameters()}
    groups = {g["name"]: g for g in param_groups(model, spec, lr=2e-3)}
    assert set(groups) == {"P", "R"}
    assert groups["P"]["lr"] == pytest.approx(5e-4) and groups["R"]["lr"] == pytest.approx(2e-3)
    assert all("deft_P" in names[id(p)] for p in groups["P"]["params"])
    assert all("deft_R" in names[id(p)] for p in groups["R"]["params"])
    n_trainable = sum(1 for p in model.parameters() if p.requires_grad)
    assert len(groups["P"]["params"]) + len(groups["R"]["params"]) == n_trainable

    para = _spec("para", p_lr_ratio=0.25)  # PaRa trains only P, at the full rate
    _, pmodel = _adapted(para)
    (only,) = param_groups(pmodel, para, lr=2e-3)
    assert only["lr"] == pytest.approx(2e-3)


@pytest.mark.parametrize("method_id", list(METHODS))
def test_loss_falls_on_a_fixed_batch(method_id, batch):
    spec = _spec(method_id)
    _, model = _adapted(spec)
    losses = _train(model, spec, batch, steps=30, lr=2e-2)
    assert all(np.isfinite(losses))
    assert losses[-1] < 0.8 * losses[0], losses


@pytest.mark.parametrize("method_id", list(METHODS))
def test_saved_adapter_reloads_and_stock_peft_loads_native_ones(method_id, batch, tmp_path):
    spec = _spec(method_id, include_embedders=True)
    comps, model = _adapted(spec, seed=0)
    _train(model, spec, batch, steps=4, lr=1e-2)
    trained = _predict(model, batch)

    folder = save_adapter(model, tmp_path / "adapter", base_name="tiny", step=4)
    assert {p.name for p in folder.iterdir()} >= {"adapter_config.json", "adapter_model.safetensors", "omnideft.json"}
    assert not list(tmp_path.glob(".tmp-*"))
    mode = (folder / "adapter_config.json").stat().st_mode & 0o777  # colleagues read the weights as the config
    assert all(f.stat().st_mode & 0o777 == mode for f in folder.glob("*.safetensors"))
    meta = json.loads((folder / "omnideft.json").read_text())
    fresh = load_omnigen("tiny", seed=0)
    assert meta["base"]["fingerprint"] == base_fingerprint(fresh.transformer)
    config = json.loads((folder / "adapter_config.json").read_text())
    assert config.get("peft_type") == meta["peft_type"]

    base_out = _predict(fresh.transformer.eval(), batch)
    assert (trained - base_out).abs().max() > 1e-4  # the adapter is not trivial
    if get_method(spec.method).peft_native(spec):
        with _seeded(999):  # a different init RNG: loaded tensors, not init values, must decide the output
            stock = PeftModel.from_pretrained(fresh.transformer, str(folder)).eval()
        # omnideft trains with the fused layer; stock PEFT recomputes the same math in another order (fp32 rounding)
        torch.testing.assert_close(_predict(stock, batch), trained, rtol=1e-5, atol=1e-5 * trained.abs().max().item())
        merged = stock.merge_and_unload().eval()  # what generation does: fold the adapter into the weights
        assert not any(isinstance(m, BaseTunerLayer) for m in merged.modules())
        torch.testing.assert_close(_predict(merged, batch), trained, rtol=1e-5, atol=1e-5 * trained.abs().max().item())
    else:  # omnideft's own config: stock PEFT refuses it rather than misreading it
        assert config["omnideft_method"] == spec.method and meta["peft_type"] is None
        with pytest.raises(Exception):
            PeftModel.from_pretrained(fresh.transformer, str(folder))

    with _seeded(998):
        ours = load_adapter(load_omnigen("tiny", seed=0).transformer, folder).eval()
    torch.testing.assert_close(_predict(ours, batch), trained, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("method_id", list(METHODS))
def test_exact_delta_merges_into_the_adapted_model(method_id, batch):
    """What export and composition use: each layer's LoRA factors or dense delta, folded into the plain base,
    give the adapted model's output; LoRA formats get the factors, or the best rank-r approximation of a dense
    delta with its error."""
    spec = _spec(method_id)
    _, model = _adapted(spec)
    _train(model, spec, batch, steps=4, lr=1e-2)
    want = _predict(model, batch)
    deltas = adapter_deltas(model)
    assert set(deltas) == set(_adapted_layers(model, method_id))
    transformer = unload(model)
    assert not any(hasattr(m, "base_layer") for m in transformer.modules())
    merge_deltas(transformer, [(1.0, deltas)])
    torch.testing.assert_close(_predict(transformer.eval(), batch), want, rtol=1e-5,
                               atol=2e-6 * want.abs().max().item())  # measured: <= 4e-7 x max
    factors, err = as_lora(deltas, RANK)
    assert all(b.shape[1] == a.shape[0] == RANK for b, a in factors.values())
    if all(isinstance(d, tuple) for d in deltas.values()):
        assert err == 0.0
    else:
        assert 0 < err < 1


def test_recipe_method_choices_are_the_registry():
    choices = {f.name: f.metadata["choices"] for f in fields(AdapterSpec)}["method"]
    assert choices == tuple(REGISTERED)


@pytest.fixture(scope="module")
def saved_deft(tmp_path_factory):
    spec = _spec("deft-qr", targets="attn")
    _, model = _adapted(spec)
    return save_adapter(model, tmp_path_factory.mktemp("saved") / "adapter", base_name="tiny")


def test_load_onto_base_of_another_shape_is_refused(saved_deft):
    from diffusers import OmniGenTransformer2DModel

    from omnideft.families.omnigen.model.tiny import tiny_transformer_config

    other = OmniGenTransformer2DModel(**dict(tiny_transformer_config(), intermediate_size=96))
    want = json.loads((saved_deft / "omnideft.json").read_text())["base"]["fingerprint"]
    with pytest.raises(UserError, match=re.escape(want)):
        load_adapter(other, saved_deft)


def test_pickle_only_adapter_is_refused(saved_deft, tmp_path):
    folder = tmp_path / "pickled"
    folder.mkdir()
    (folder / "adapter_config.json").write_text((saved_deft / "adapter_config.json").read_text())
    torch.save({"x": torch.zeros(1)}, folder / "adapter_model.bin")
    with pytest.raises(UserError, match="pickle"):
        load_adapter(load_omnigen("tiny").transformer, folder)


def test_truncated_safetensors_is_refused(saved_deft, tmp_path):
    import shutil

    folder = tmp_path / "truncated"
    shutil.copytree(saved_deft, folder)
    data = (folder / "adapter_model.safetensors").read_bytes()
    (folder / "adapter_model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match=r"cannot read .*truncated/adapter_model.safetensors: .*incomplete"):
        with _seeded(0):
            load_adapter(load_omnigen("tiny").transformer, folder)


def test_save_adapter_with_a_non_default_adapter_name(tmp_path):
    comps = load_omnigen("tiny")
    with _seeded(0):
        model = apply_adapter(comps.transformer, _spec("deft-qr", targets="attn"), adapter_name="subject",
                              targets=omnigen_targets)
    folder = save_adapter(model, tmp_path / "adapter", base_name="tiny")
    assert (folder / "adapter_model.safetensors").is_file()
    assert json.loads((folder / "omnideft.json").read_text())["peft_type"] == "DEFT"


def test_every_method_has_a_title_for_reports():
    titles = {name: get_method(name).title for name in REGISTERED}
    assert titles["lora"] == "LoRA" and titles["deft"] == "DEFT" and titles["para"] == "PaRa"
    assert all(t and t.lower() == n.lower() for n, t in titles.items())
