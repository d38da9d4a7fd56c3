"""SODA (svd and qr variants, Stiefel and Cayley rotations) and SVDiff."""

import pytest
import torch
from torch import nn

from omnideft.adapters import AdapterSpec, apply_adapter, load_adapter, save_adapter
from omnideft.adapters.optim import StiefelAdamW, build_optimizer, requires_plain_optimizer
from omnideft.adapters.spectral import AdapterModel, SpectralLinear, inject_spectral, kron_sizes
from omnideft.errors import UserError
from omnideft.families.omnigen.model import load_omnigen
from omnideft.families.omnigen.targets import target_modules as omnigen_targets
from tests.test_adapters import _loss, _predict, batch  # noqa: F401  (pytest fixture)

SPECS = {
    "soda-svd": dict(method="soda"),
    "soda-qr": dict(method="soda", soda_variant="qr"),
    "soda-cayley": dict(method="soda", soda_rotation="cayley"),
    "svdiff": dict(method="svdiff"),
}


def test_kron_sizes_any_width():
    for n in (3072, 8192, 9216, 16384, 96, 7, 1):
        sizes = kron_sizes(n)
        assert len(sizes) == 3 and sizes[0] * sizes[1] * sizes[2] == n
    assert kron_sizes(3072) == (12, 16, 16) and kron_sizes(8192) == (16, 16, 32)


@pytest.mark.parametrize("sid", list(SPECS))
def test_identity_at_init_and_save_load_round_trip(sid, batch, tmp_path):  # noqa: F811
    comps = load_omnigen("tiny")
    base_out = _predict(comps.transformer.eval(), batch)
    model = apply_adapter(comps.transformer, AdapterSpec(rank=4, targets="all-linear", **SPECS[sid]),
                          targets=omnigen_targets).eval()
    assert isinstance(model, AdapterModel)
    out = _predict(model, batch)
    torch.testing.assert_close(out, base_out, rtol=1e-4, atol=1e-5 * base_out.abs().max().item())

    with torch.no_grad():  # move away from identity, keeping the rotation orthogonal
        for _, layer in model.adapter_layers():
            layer.shift.normal_(0, 0.05)
            if layer.kind == "soda" and layer.rotation == "stiefel":
                layer.soda_rot[1].copy_(torch.linalg.qr(torch.randn(layer.sizes[1], layer.sizes[1])).Q)
            elif layer.kind == "soda":
                layer.soda_rot[1].normal_(0, 0.1)
    trained = _predict(model, batch)
    assert (trained - base_out).abs().max() > 1e-4
    folder = save_adapter(model, tmp_path / "a", base_name="tiny")
    prefix = "svdiff_" if sid == "svdiff" else "soda_"
    from safetensors.torch import load_file

    keys = set(load_file(folder / "adapter_model.safetensors"))
    assert keys and all(k.split(".")[-1].startswith(prefix) or ".soda_rot." in k for k in keys)
    loaded = load_adapter(load_omnigen("tiny").transformer, folder)
    torch.testing.assert_close(_predict(loaded, batch), trained, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("variant,rotation", [("svd", "stiefel"), ("qr", "stiefel"), ("svd", "cayley")])
def test_rotation_stays_orthogonal_and_spectrum_trains(variant, rotation):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(24, 40), nn.Tanh(), nn.Linear(40, 24))
    x, target = torch.randn(32, 24), torch.randn(32, 24)
    inject_spectral(net, ["0", "2"], "soda", variant, rotation)
    model = AdapterModel(net, "soda", ["0", "2"])
    spec = AdapterSpec(method="soda", soda_variant=variant, soda_rotation=rotation)
    opt = build_optimizer(model, spec, lr=1e-2)
    assert isinstance(opt, StiefelAdamW) == (rotation == "stiefel")
    layers = [m for m in net.modules() if isinstance(m, SpectralLinear)]
    rot0 = [[p.detach().clone() for p in m.soda_rot] for m in layers]
    losses = []
    for _ in range(100):
        loss = (model(x) - target).pow(2).mean()
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < 0.9 * losses[0]
    for m, before in zip(layers, rot0):
        assert m.orthogonality_error() < 1e-4
        for mat in m.rotations():
            eye = torch.eye(mat.shape[0])
            assert torch.linalg.matrix_norm(mat.T @ mat - eye) < 1e-4
        assert m.shift.abs().max() > 1e-3  # the spectrum trains
        assert any((p - b).abs().max() > 1e-3 for p, b in zip(m.soda_rot, before))  # so does the rotation


def test_svdiff_trains_only_the_spectrum(batch):  # noqa: F811
    comps = load_omnigen("tiny")
    spec = AdapterSpec(method="svdiff", targets="attn")
    model = apply_adapter(comps.transformer, spec, targets=omnigen_targets)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(n.endswith("svdiff_shift") for n in trainable)
    opt = build_optimizer(model, spec, lr=5e-2)
    first = None
    for _ in range(8):
        loss = _loss(model, batch)
        loss.backward()
        opt.step()
        opt.zero_grad()
        first = first if first is not None else loss.item()
    assert loss.item() < first


def test_zero_compatibility_is_reported():
    assert "cayley" in requires_plain_optimizer(AdapterSpec(method="soda"))
    assert requires_plain_optimizer(AdapterSpec(method="soda", soda_rotation="cayley")) is None
    assert requires_plain_optimizer(AdapterSpec(method="deft")) is None


def test_bad_soda_variant_is_a_user_error():
    with pytest.raises(UserError, match="soda_variant"):
        apply_adapter(load_omnigen("tiny").transformer, AdapterSpec(method="soda", soda_variant="lu"),
                      targets=omnigen_targets)
