import json
import shutil
from collections import Counter

import pytest
import torch

from omnideft.errors import UserError
from omnideft.families.omnigen.model import load_omnigen, save_base
from omnideft.families.omnigen.targets import target_modules as target_module_names


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return set(sa) == set(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_tiny_is_deterministic_per_seed():
    a, b, c = load_omnigen("tiny", seed=0), load_omnigen("tiny", seed=0), load_omnigen("tiny", seed=1)
    assert _same_weights(a.transformer, b.transformer) and _same_weights(a.vae, b.vae)
    assert not _same_weights(a.transformer, c.transformer)
    assert not _same_weights(a.vae, c.vae)
    assert a.vae_scale_factor == 8
    assert a.tokenizer("<s>").input_ids[0] == 1  # BOS id 1, as OmniGen's processor assumes
    assert not any(p.requires_grad for p in a.transformer.parameters())
    # building the tiny model must not disturb the global RNG stream
    torch.manual_seed(123)
    x = torch.rand(3)
    torch.manual_seed(123)
    load_omnigen("tiny", seed=7)
    assert torch.equal(torch.rand(3), x)


def test_save_base_layout_and_reload(tiny, tmp_path):
    from diffusers import OmniGenTransformer2DModel

    out = save_base(tiny, tmp_path / "base")
    for sub in ("transformer", "vae", "tokenizer", "scheduler"):
        assert (out / sub).is_dir(), sub
    index = json.loads((out / "model_index.json").read_text())
    assert index["_class_name"] == "OmniGenPipeline"
    assert index["transformer"] == ["diffusers", "OmniGenTransformer2DModel"]
    assert index["vae"] == ["diffusers", "AutoencoderKL"]

    again = load_omnigen(str(out))
    assert _same_weights(again.transformer, tiny.transformer)
    assert _same_weights(again.vae, tiny.vae)
    text = "<|user|> a red circle <img> </img>"
    assert again.tokenizer(text).input_ids == tiny.tokenizer(text).input_ids
    assert again.scheduler.config.invert_sigmas is True
    plain = OmniGenTransformer2DModel.from_pretrained(out, subfolder="transformer")
    assert _same_weights(plain, tiny.transformer)


def test_unknown_hub_id_offline_is_a_user_error():
    with pytest.raises(UserError, match=r"network.*local directory|local directory.*network"):
        load_omnigen("omnideft-tests/no-such-model-anywhere")


def test_not_a_model_name_is_a_user_error():
    with pytest.raises(UserError, match="neither"):
        load_omnigen("definitely-not-here")


def test_folder_missing_vae_is_named(tiny, tmp_path):
    out = save_base(tiny, tmp_path / "base")
    shutil.rmtree(out / "vae")
    with pytest.raises(UserError, match=r"missing vae/"):
        load_omnigen(str(out))


def test_original_format_folder_points_to_conversion(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(UserError, match="convert"):
        load_omnigen(str(tmp_path))


def _per_layer(names: list[str]) -> Counter:
    return Counter(int(n.split(".")[1]) for n in names if n.startswith("layers."))


def test_target_presets(tiny):
    t = tiny.transformer
    n_layers = t.config.num_layers
    attn = target_module_names(t, "attn")
    assert _per_layer(attn) == {i: 4 for i in range(n_layers)} and len(attn) == 4 * n_layers
    assert {n.split("self_attn.")[1] for n in attn} == {"to_q", "to_k", "to_v", "to_out.0"}
    lin = target_module_names(t, "all-linear")
    assert _per_layer(lin) == {i: 6 for i in range(n_layers)} and len(lin) == 6 * n_layers
    assert set(attn) < set(lin)
    for preset in ("attn", "all-linear"):
        plus = target_module_names(t, preset, include_embedders=True)
        extra = set(plus) - set(target_module_names(t, preset))
        assert extra == {"time_token.linear_1", "time_token.linear_2", "t_embedder.linear_1",
                         "t_embedder.linear_2", "norm_out.linear", "proj_out"}
        assert len(plus) == len(set(plus))
    modules = dict(t.named_modules())
    assert all(isinstance(modules[n], torch.nn.Linear) for n in target_module_names(t, "all-linear", True))
    assert target_module_names(t, ["to_q"]) == [f"layers.{i}.self_attn.to_q" for i in range(n_layers)]
    with pytest.raises(UserError, match="not a preset"):
        target_module_names(t, "everything")
