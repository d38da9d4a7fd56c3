"""The fused DEFT/PaRa layer against PEFT's DeftLinear, every projector, and the omnideft-config folder."""

import copy
import json

import pytest
import torch
from peft import DeftConfig, PeftModel, get_peft_model
from torch import nn

from omnideft.adapters import AdapterSpec, apply_adapter, load_adapter, save_adapter
from omnideft.adapters.fast_deft import FastDeftLinear, use_fast_layers
from omnideft.adapters.projectors import PROJECTORS, project
from omnideft.errors import UserError
from omnideft.families.omnigen.model import load_omnigen
from omnideft.families.omnigen.targets import target_modules as omnigen_targets

# Relative error of the fused layer against PEFT's: measured worst over the cases below 1.2e-7 (output), 1.0e-7
# (input gradient), 2.0e-7 (parameter gradients): fp32 rounding of another summation order, nothing more. Robust to
# the CPU kernel family and thread count: worst 2.24e-7 (AVX-512) and 2.27e-7 (AVX2 ATen/oneDNN/MKL), 1 and 2 threads.
FUSED_REL = 6e-7


def _rel(a, b) -> float:
    return float((a.detach().float() - b.detach().float()).norm() / b.detach().float().norm())


def _pair(projector: str, para: bool, bias: bool = True, alpha=None):
    torch.manual_seed(0)
    base = nn.Sequential(nn.Linear(24, 40, bias=bias), nn.GELU(), nn.Linear(40, 20, bias=bias))
    cfg = DeftConfig(r=6, decomposition_method=projector, para=para, init_weights=False, alpha=alpha,
                     target_modules=["0", "2"])
    ref = get_peft_model(base, cfg)
    fast = copy.deepcopy(ref)
    assert use_fast_layers(fast) == 2
    return ref, fast


@pytest.mark.numeric  # two summation orders: the bound must hold on every CPU kernel family
@pytest.mark.parametrize("keep", [True, False])
@pytest.mark.parametrize("projector,para,bias,alpha", [("relu", False, True, None), ("qr", False, False, 12.0),
                                                       ("qr", True, True, None), ("relu", True, False, None)])
def test_fused_layer_matches_peft_values_and_gradients(projector, para, bias, alpha, keep):
    ref, fast = _pair(projector, para, bias, alpha)
    for m in fast.modules():
        if isinstance(m, FastDeftLinear):
            m.keep_base_output = keep  # both ways of forming the gradient into `right`
    x = torch.randn(2, 5, 24, requires_grad=True)
    x2 = x.detach().clone().requires_grad_()
    w = torch.randn(2, 5, 20)
    out_ref, out_fast = ref(x), fast(x2)
    assert _rel(out_fast, out_ref) <= FUSED_REL
    (out_ref * w).sum().backward()
    (out_fast * w).sum().backward()
    assert _rel(x2.grad, x.grad) <= FUSED_REL
    grads = {n: p.grad for n, p in ref.named_parameters() if p.requires_grad}
    assert grads and all(g is not None for g in grads.values())
    for n, p in fast.named_parameters():
        if p.requires_grad:
            assert _rel(p.grad, grads[n]) <= FUSED_REL, n


def test_fused_layer_keeps_no_out_sized_activation():
    """Saved for backward: the input x, the N x r tensor t and the rank-r factors, not the out-sized y or h
    (rows >= input features: the `auto` policy recomputes the gradient into `right` from x)."""
    _, fast = _pair("qr", False)
    layer = fast.base_model.model[0]
    assert isinstance(layer, FastDeftLinear)
    saved = []
    x = torch.randn(64, 24, requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        layer(x)
    big = [t for t in saved if t.dim() == 2 and t.shape[0] == 64]
    assert {tuple(t.shape) for t in big} <= {(64, 24), (64, 6)}, [t.shape for t in big]
    assert all(t.dtype == x.dtype for t in big if t.shape == (64, 24))


def test_fused_layer_in_bf16_returns_bf16_and_stays_close():
    ref, fast = _pair("relu", False)
    x = torch.randn(3, 24)
    want = ref(x)
    got = fast.to(torch.bfloat16)(x.bfloat16())
    assert got.dtype == torch.bfloat16
    assert _rel(got, want) < 2e-2


@pytest.mark.parametrize("projector", PROJECTORS)
def test_every_projector_trains_p_and_starts_at_identity(projector):
    comps = load_omnigen("tiny")
    x = torch.randn(3, 5, comps.transformer.config.hidden_size)
    lin = comps.transformer.layers[0].mlp.down_proj
    x = torch.randn(3, 5, lin.in_features)
    base_out = lin(x).detach()
    torch.manual_seed(0)
    model = apply_adapter(comps.transformer, AdapterSpec(method="deft", rank=4, projector=projector,
                                                         targets=["layers.0.mlp.down_proj"]), targets=omnigen_targets)
    layer = model.get_base_model().layers[0].mlp.down_proj
    assert isinstance(layer, FastDeftLinear) and layer.deft_decomposition["default"] == projector
    out = layer(x)
    torch.testing.assert_close(out, base_out, rtol=1e-4, atol=1e-5 * base_out.abs().max().item())
    (out * torch.randn_like(out)).sum().backward()
    assert layer.deft_P["default"].grad.abs().max() > 0
    assert layer.deft_R["default"].grad.abs().max() > 0


def test_orthogonal_projectors_are_projectors():
    P = torch.randn(30, 4, dtype=torch.float64).float()
    for name in ("qr", "svd", "lrmf", "nmf", "eigen"):
        q, right = project(P, name)
        proj = q @ right.T
        torch.testing.assert_close(proj @ proj, proj, atol=1e-4, rtol=1e-4)
    q, right = project(P, "tsvd")  # (P P^T)^1/2
    s = torch.linalg.svdvals(P)
    torch.testing.assert_close(torch.linalg.svdvals(q @ right.T)[:4], s, atol=1e-4, rtol=1e-4)


def test_unknown_projector_is_a_user_error():
    with pytest.raises(UserError, match="projector 'lu'"):
        apply_adapter(load_omnigen("tiny").transformer, AdapterSpec(method="deft", rank=2, projector="lu"),
                      targets=omnigen_targets)


def test_non_peft_projector_saves_own_config_and_reloads(tmp_path):
    comps = load_omnigen("tiny")
    torch.manual_seed(0)
    spec = AdapterSpec(method="deft", rank=3, projector="ppt", targets="attn", init="paper")
    model = apply_adapter(comps.transformer, spec, targets=omnigen_targets)
    x = torch.randn(2, 7, comps.transformer.config.hidden_size)
    q = model.get_base_model().layers[1].self_attn.to_q
    want = q(x).detach()
    folder = save_adapter(model, tmp_path / "a", base_name="tiny")
    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["omnideft_method"] == "deft" and config["spec"]["projector"] == "ppt" and "peft_type" not in config
    with pytest.raises(Exception):  # stock PEFT refuses rather than misreading it as relu
        PeftModel.from_pretrained(load_omnigen("tiny").transformer, str(folder))
    torch.manual_seed(5)
    loaded = load_adapter(load_omnigen("tiny").transformer, folder)
    got = loaded.get_base_model().layers[1].self_attn.to_q(x)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)
