"""`omnideft export` and adapter composition: exact LoRA forms, file layouts, merged pipelines, bad input."""

import json

import pytest
import torch
from peft import PeftModel

from omnideft.adapters import AdapterSpec, apply_adapter, load_adapter, save_adapter
from omnideft.adapters.compose import merge_adapters, parse_adapter_arg
from omnideft.adapters.export import adapter_deltas
from omnideft.errors import UserError
from omnideft.export.run import run_export
from omnideft.families.omnigen.model import load_omnigen
from omnideft.families.omnigen.targets import target_modules as omnigen_targets
from tests.helpers import assert_one_line_error, run_cli, run_cli_here
from tests.test_adapters import _predict, batch  # noqa: F401  (pytest fixture)


def _saved(tmp_path, name: str, seed: int = 0, **kw):
    """A non-trivial adapter (random `paper` init) on the tiny base, its folder and its outputs."""
    comps = load_omnigen("tiny")
    torch.manual_seed(seed)
    spec = AdapterSpec(**{"rank": 3, "targets": "all-linear", "init": "paper", **kw})
    model = apply_adapter(comps.transformer, spec, targets=omnigen_targets).eval()
    return model, save_adapter(model, tmp_path / name, base_name="tiny")


@pytest.mark.parametrize("kw", [dict(method="deft", projector="qr"), dict(method="deft", projector="relu"),
                                dict(method="deft", projector="lrmf"), dict(method="para")])
def test_peft_lora_export_loads_in_stock_peft_and_matches(kw, batch, tmp_path):  # noqa: F811
    model, folder = _saved(tmp_path, "a", **kw)
    want = _predict(model, batch)
    report = run_export(str(folder), "peft-lora", "tiny", str(tmp_path / "lora"))
    assert "exact LoRA form" in report
    config = json.loads((tmp_path / "lora" / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == config["lora_alpha"] == 3
    stock = PeftModel.from_pretrained(load_omnigen("tiny").transformer, str(tmp_path / "lora")).eval()
    got = _predict(stock, batch)
    assert (want - _predict(load_omnigen("tiny").transformer.eval(), batch)).abs().max() > 1e-3
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * want.abs().max().item())


def test_lora_formats_without_a_client_are_refused_and_original_names_fuse_qkv_exactly(tmp_path):
    """OmniGen (v1) has no consumer of diffusers / ComfyUI / kohya LoRA files (docs/export.md): one line naming the
    formats it offers, nothing written. Its original-checkpoint names (a format of the official package's) fuse the
    split q/k/v LoRAs into one qkv_proj LoRA, exactly."""
    from omnideft.families.omnigen.export import fused_original

    model, folder = _saved(tmp_path, "a", method="deft", projector="qr")
    for fmt in ("diffusers", "comfyui", "kohya"):
        proc = run_cli_here("export", str(folder), "--format", fmt, "--base", "tiny", "--out", str(tmp_path / fmt))
        assert_one_line_error(proc, f"--format {fmt}: OmniGen (v1) exports peft-lora, omnigen, merged only")
        assert not (tmp_path / fmt).exists()
    deltas = adapter_deltas(model)
    fused = fused_original(deltas, model.get_base_model())
    dense = {name: b @ a for name, (b, a) in deltas.items()}
    assert len(fused) == 4 * 2  # q, k, v of a layer are one module
    for layer in (0, 1):  # every adapted layer: MLP as is, o_proj = to_out.0, q/k/v fused
        expected = {"mlp.down_proj": dense[f"layers.{layer}.mlp.down_proj"],
                    "mlp.gate_up_proj": dense[f"layers.{layer}.mlp.gate_up_proj"],
                    "self_attn.o_proj": dense[f"layers.{layer}.self_attn.to_out.0"],
                    "self_attn.qkv_proj": torch.cat([dense[f"layers.{layer}.self_attn.{p}"]
                                                     for p in ("to_q", "to_k", "to_v")])}
        for part, want in expected.items():
            assert want.abs().max() > 1e-2  # a delta worth comparing
            b, a = fused[f"llm.layers.{layer}.{part}"]
            torch.testing.assert_close(b @ a, want, rtol=0, atol=1e-6 * want.abs().max().item(), msg=part)
    assert fused["llm.layers.1.self_attn.qkv_proj"][1].shape[0] == 9  # rank r_q + r_k + r_v


def test_merged_export_is_a_pipeline_folder_with_the_adapted_weights(batch, tmp_path):  # noqa: F811
    model, folder = _saved(tmp_path, "a", method="deft", projector="relu")
    want = _predict(model, batch)
    proc = run_cli("export", str(folder), "--format", "merged", "--base", "tiny", "--out", str(tmp_path / "m"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "m" / "transformer" / "diffusion_pytorch_model.safetensors").is_file()
    merged = load_omnigen(str(tmp_path / "m")).transformer.eval()
    torch.testing.assert_close(_predict(merged, batch), want, rtol=1e-5, atol=1e-5 * want.abs().max().item())


def test_soda_exports_merged_exactly_and_low_rank_with_its_error(batch, tmp_path):  # noqa: F811
    model, folder = _saved(tmp_path, "s", method="soda", targets="attn")
    with torch.no_grad():  # a trained-looking adapter: non-zero spectrum shift and rotated factors
        for _, layer in model.adapter_layers():
            layer.soda_shift.normal_(0, 0.05)
            q = torch.linalg.qr(torch.randn(layer.sizes[0], layer.sizes[0])).Q
            layer.soda_rot[0].copy_(q)
    folder = save_adapter(model, tmp_path / "s", base_name="tiny")
    want = _predict(model, batch)
    report = run_export(str(folder), "merged", "tiny", str(tmp_path / "m"))
    assert "merged" in report
    merged = load_omnigen(str(tmp_path / "m")).transformer.eval()
    torch.testing.assert_close(_predict(merged, batch), want, rtol=1e-5, atol=1e-5 * want.abs().max().item())
    report = run_export(str(folder), "peft-lora", "tiny", str(tmp_path / "l"), rank=4)
    assert "best rank-4 approximation" in report and "relative error" in report
    err = float(report.rsplit("relative error ", 1)[1].split(")")[0])
    assert 0 < err < 1


def test_composition_is_the_weighted_sum_of_exact_deltas(tmp_path):
    m1, f1 = _saved(tmp_path, "a", seed=1, method="deft", projector="qr")
    m2, f2 = _saved(tmp_path, "b", seed=2, method="para")
    d1, d2 = adapter_deltas(m1), adapter_deltas(m2)
    base = load_omnigen("tiny").transformer
    w0 = {n: m.weight.detach().clone() for n, m in base.named_modules() if n in d1}
    composed = merge_adapters(base, [parse_adapter_arg(f"{f1}:0.7"), parse_adapter_arg(f"{f2}:0.5")])
    assert not any("deft" in n for n, _ in composed.named_parameters())
    for n, m in composed.named_modules():
        if n in d1:
            want = w0[n] + 0.7 * d1[n][0] @ d1[n][1] + 0.5 * d2[n][0] @ d2[n][1]
            torch.testing.assert_close(m.weight, want, rtol=1e-5, atol=1e-6)
    # one adapter at weight 1 merged == the adapter model itself (stock PEFT's merge as the reference)
    single = merge_adapters(load_omnigen("tiny").transformer, [(str(f1), 1.0)])
    ref = PeftModel.from_pretrained(load_omnigen("tiny").transformer, str(f1)).merge_and_unload()
    for (n, p), (_, q) in zip(single.named_parameters(), ref.named_parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=n)


def test_adapter_argument_parsing(tmp_path):
    assert parse_adapter_arg("runs/a/adapter:0.7") == ("runs/a/adapter", 0.7)
    assert parse_adapter_arg("runs/a/adapter") == ("runs/a/adapter", 1.0)
    (tmp_path / "x").mkdir()
    with pytest.raises(UserError, match="not a number"):
        parse_adapter_arg(f"{tmp_path / 'x'}:heavy")


def test_export_bad_input_is_one_line(tmp_path):
    _, folder = _saved(tmp_path, "a", method="deft", projector="qr", targets="attn")
    proc = run_cli("export", str(folder), "--format", "onnx", "--base", "tiny", "--out", str(tmp_path / "o"))
    assert_one_line_error(proc, "onnx")
    (folder / "adapter_model.safetensors").write_bytes((folder / "adapter_model.safetensors").read_bytes()[:100])
    proc = run_cli_here("export", str(folder), "--format", "peft-lora", "--base", "tiny", "--out", str(tmp_path / "o"))
    assert_one_line_error(proc, "cannot read", "adapter_model.safetensors")


def test_generate_with_two_weighted_adapters(tmp_path):
    _, f1 = _saved(tmp_path, "a", seed=1, method="deft", projector="qr", targets="attn")
    _, f2 = _saved(tmp_path, "b", seed=2, method="deft", projector="relu", targets="attn")
    out = tmp_path / "img.png"
    proc = run_cli_here("generate", "--model", "tiny", "--adapter", f"{f1}:0.7", "--adapter", f"{f2}:0.5",
                        "--prompt", "a red square", "--out", str(out), "--steps", "2", "--height", "32", "--width",
                        "32")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert out.is_file()


def test_load_refuses_unknown_method_config(tmp_path):
    _, folder = _saved(tmp_path, "a", method="deft", projector="ppt", targets="attn")
    config = json.loads((folder / "adapter_config.json").read_text())
    config["spec"]["projector"] = "lu"
    (folder / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match="projector 'lu'"):
        load_adapter(load_omnigen("tiny").transformer, folder)


def _peft_folder(tmp_path, config) -> str:
    """A folder stock PEFT wrote (no omnideft.json), for a config omnideft may not be able to express."""
    from peft import get_peft_model

    torch.manual_seed(0)
    model = get_peft_model(load_omnigen("tiny").transformer, config)
    model.save_pretrained(str(tmp_path / "peft"))
    return str(tmp_path / "peft")


def test_export_and_composition_refuse_a_layer_no_method_expresses(tmp_path):
    """Before the method interface, these layers were skipped in silence: an export or merge without them."""
    from peft import LoHaConfig, LoraConfig

    loha = _peft_folder(tmp_path / "loha", LoHaConfig(r=2, target_modules=["to_q"], init_weights=False))
    with pytest.raises(UserError, match=r"layers\.0\.self_attn\.to_q \(.*\) belongs to no registered adapter method"):
        merge_adapters(load_omnigen("tiny").transformer, [(loha, 0.5), (loha, 0.5)])
    with pytest.raises(UserError, match=r"layers\.0\.self_attn\.to_q .*no registered adapter method"):
        run_export(loha, "peft-lora", "tiny", str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()

    dora = _peft_folder(tmp_path / "dora", LoraConfig(r=2, target_modules=["to_v"], use_dora=True))
    with pytest.raises(UserError, match=r"layers\.0\.self_attn\.to_v \(method lora\) .*DoraLinearVariant"):
        merge_adapters(load_omnigen("tiny").transformer, [(dora, 1.0)])
