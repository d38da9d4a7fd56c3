import argparse
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from omnideft.errors import UserError
from omnideft.families.omnigen.model import load_omnigen
from omnideft.families.omnigen.model.convert import convert_original_checkpoint, original_to_diffusers_state_dict
from omnideft.families.omnigen.model.tiny import build_tiny, tiny_transformer_config


def _to_original(sd: dict) -> dict:
    """The inverse of diffusers' layout, written out by hand (independent of convert.KEY_MAP)."""
    rename = {
        "patch_embedding.pos_embed": "pos_embed",
        "patch_embedding.output_image_proj.": "x_embedder.proj.",
        "patch_embedding.input_image_proj.": "input_x_embedder.proj.",
        "time_token.linear_1.": "time_token.mlp.0.",
        "time_token.linear_2.": "time_token.mlp.2.",
        "t_embedder.linear_1.": "t_embedder.mlp.0.",
        "t_embedder.linear_2.": "t_embedder.mlp.2.",
        "norm_out.linear.": "final_layer.adaLN_modulation.1.",
        "proj_out.": "final_layer.linear.",
        "embed_tokens.": "llm.embed_tokens.",
        "norm.": "llm.norm.",
    }
    out = {}
    for k, v in sd.items():
        if k.startswith("layers."):
            if ".self_attn.to_k." in k or ".self_attn.to_v." in k:
                continue
            if ".self_attn.to_q." in k:
                pre = k.split(".self_attn.")[0]
                out["llm." + pre + ".self_attn.qkv_proj.weight"] = torch.cat(
                    [sd[f"{pre}.self_attn.to_{x}.weight"] for x in "qkv"], dim=0)
            elif ".self_attn.to_out.0." in k:
                out["llm." + k.replace("to_out.0", "o_proj")] = v.clone()
            else:
                out["llm." + k] = v.clone()
            continue
        for a, b in rename.items():
            if k.startswith(a):
                out[b + k[len(a):]] = v.clone()
                break
        else:
            raise AssertionError(f"test inverse mapping lacks {k}")
    return out


def _phi3_config() -> dict:
    c = tiny_transformer_config()
    return {
        "architectures": ["Phi3ForCausalLM"], "model_type": "phi3", "hidden_act": "silu",
        "hidden_size": c["hidden_size"], "num_hidden_layers": c["num_layers"],
        "num_attention_heads": c["num_attention_heads"], "num_key_value_heads": c["num_key_value_heads"],
        "intermediate_size": c["intermediate_size"], "vocab_size": c["vocab_size"], "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0, "rope_scaling": dict(c["rope_scaling"], type="su"),
        "max_position_embeddings": 131072, "original_max_position_embeddings": 4096, "pad_token_id": c["pad_token_id"],
    }


def _forward(transformer):
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(3, 400, (1, 6), generator=g)
    lat = torch.randn(1, 4, 2, 4, generator=g)  # 2 input-image tokens
    ids[0, 2:4] = 0
    L = 6 + 1 + 4  # text + time token + 2x2 output tokens
    mask = torch.tril(torch.ones(1, L, L))
    mask[:, 7:, :] = 1
    return transformer(hidden_states=torch.randn(1, 4, 4, 4, generator=g), timestep=torch.tensor([0.3]),
                       input_ids=ids, input_img_latents=[lat], input_image_sizes={0: [[2, 4]]},
                       attention_mask=mask, position_ids=torch.arange(L)[None], return_dict=False)[0]


def _write_original(tmp_path, transformer, **extra_keys):
    src = tmp_path / "orig"
    src.mkdir()
    sd = _to_original(transformer.state_dict())
    sd.update(extra_keys)
    save_file(sd, str(src / "model.safetensors"))
    (src / "config.json").write_text(json.dumps(_phi3_config()))
    return src, sd


def test_roundtrip_tensors_and_forward_identical(tmp_path):
    transformer, vae, tokenizer, _ = build_tiny(seed=5)
    src, orig = _write_original(tmp_path, transformer)
    assert "llm.layers.1.self_attn.qkv_proj.weight" in orig and not any(k.startswith("layers.") for k in orig)
    out = convert_original_checkpoint(src, tmp_path / "out")
    assert (out / "transformer" / "config.json").is_file() and not (out / "vae").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["orig", "out"]  # no temporary leftovers

    from diffusers import OmniGenTransformer2DModel

    conv = OmniGenTransformer2DModel.from_pretrained(out / "transformer")
    want, got = transformer.state_dict(), conv.state_dict()
    assert set(want) == set(got)
    for k in want:
        assert torch.equal(want[k], got[k]), k
    assert conv.config.pos_embed_max_size == transformer.config.pos_embed_max_size
    assert conv.config.time_step_dim == transformer.config.time_step_dim
    assert list(conv.config.rope_scaling["short_factor"]) == transformer.config.rope_scaling["short_factor"]
    with torch.no_grad():
        assert torch.equal(_forward(transformer.eval()), _forward(conv.eval()))


def test_full_folder_when_vae_and_tokenizer_present(tmp_path):
    transformer, vae, tokenizer, _ = build_tiny(seed=6)
    src, _ = _write_original(tmp_path, transformer)
    vae.save_pretrained(src / "vae")
    tokenizer.save_pretrained(src)
    out = convert_original_checkpoint(src, tmp_path / "out")
    assert all((out / d).is_dir() for d in ("transformer", "vae", "tokenizer", "scheduler"))
    comps = load_omnigen(str(out))
    assert torch.equal(comps.transformer.layers[0].self_attn.to_k.weight, transformer.layers[0].self_attn.to_k.weight)
    assert comps.tokenizer("red").input_ids == tokenizer("red").input_ids
    with pytest.raises(UserError, match="not empty"):
        convert_original_checkpoint(src, out)


def test_missing_key_is_named(tmp_path):
    transformer, *_ = build_tiny(seed=0)
    src, sd = _write_original(tmp_path, transformer)
    del sd["llm.layers.1.mlp.down_proj.weight"]
    save_file(sd, str(src / "model.safetensors"))
    with pytest.raises(UserError, match=r"missing .*llm\.layers\.1\.mlp\.down_proj\.weight"):
        convert_original_checkpoint(src, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_unknown_key_is_named(tmp_path):
    transformer, *_ = build_tiny(seed=0)
    src, _ = _write_original(tmp_path, transformer, **{"llm.lm_head.weight": torch.zeros(2, 2)})
    with pytest.raises(UserError, match=r"unknown .*llm\.lm_head\.weight"):
        convert_original_checkpoint(src, tmp_path / "out")


def test_extra_layer_against_config_is_named(tmp_path):
    transformer, *_ = build_tiny(seed=0)
    src, sd = _write_original(tmp_path, transformer)
    sd["llm.layers.2.input_layernorm.weight"] = torch.ones(32)
    save_file(sd, str(src / "model.safetensors"))
    with pytest.raises(UserError, match=r"llm\.layers\.2\.input_layernorm\.weight"):
        convert_original_checkpoint(src, tmp_path / "out")


def test_legacy_model_pt_weights_only(tmp_path):
    transformer, *_ = build_tiny(seed=1)
    src, sd = _write_original(tmp_path, transformer)
    (src / "model.safetensors").unlink()
    torch.save(sd, src / "model.pt")
    out = convert_original_checkpoint(src, tmp_path / "out")
    got = load_file(str(out / "transformer" / "diffusion_pytorch_model.safetensors"))
    assert torch.equal(got["layers.0.self_attn.to_v.weight"], transformer.layers[0].self_attn.to_v.weight)

    # an arbitrary pickled object (not a plain tensor container) must be refused, never unpickled
    torch.save({"args": argparse.Namespace(lr=1.0), **sd}, src / "model.pt")
    with pytest.raises(UserError, match="weights_only"):
        convert_original_checkpoint(src, tmp_path / "out2")
    (src / "model.pt").unlink()
    with pytest.raises(UserError, match="model.safetensors"):
        convert_original_checkpoint(src, tmp_path / "out3")


def test_gqa_split_sizes():
    hidden, heads, kv = 8, 4, 2  # head_dim 2: q 8 rows, k 4, v 4
    qkv = torch.arange(16 * hidden, dtype=torch.float32).reshape(16, hidden)
    out = original_to_diffusers_state_dict({"llm.layers.3.self_attn.qkv_proj.weight": qkv}, heads, kv)
    assert torch.equal(out["layers.3.self_attn.to_q.weight"], qkv[:8])
    assert torch.equal(out["layers.3.self_attn.to_k.weight"], qkv[8:12])
    assert torch.equal(out["layers.3.self_attn.to_v.weight"], qkv[12:])
    with pytest.raises(UserError, match="qkv_proj"):
        original_to_diffusers_state_dict({"llm.layers.0.self_attn.qkv_proj.weight": qkv[:15]}, heads, kv)


def test_hub_sized_config_maps_to_diffusers_defaults():
    """Phi-3-mini-128k's config.json plus OmniGen-v1 weight shapes give exactly diffusers' default config."""
    import inspect

    from diffusers import OmniGenTransformer2DModel

    from omnideft.families.omnigen.model.convert import transformer_config

    factors = [1.0] * 48
    cfg = {"hidden_size": 3072, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32,
           "intermediate_size": 8192, "vocab_size": 32064, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
           "rope_scaling": {"type": "su", "short_factor": factors, "long_factor": factors},
           "max_position_embeddings": 131072, "original_max_position_embeddings": 4096, "pad_token_id": 32000}
    meta = {"pos_embed": torch.empty(1, 192 * 192, 3072, device="meta"),
            "x_embedder.proj.weight": torch.empty(3072, 4, 2, 2, device="meta"),
            "time_token.mlp.0.weight": torch.empty(3072, 256, device="meta")}
    got = transformer_config(cfg, meta)
    defaults = {k: p.default for k, p in inspect.signature(OmniGenTransformer2DModel.__init__).parameters.items()
                if k != "self"}
    for k, v in got.items():
        if k != "rope_scaling":
            assert v == defaults[k], k
    assert got["rope_scaling"] == {"short_factor": factors, "long_factor": factors}
    with pytest.raises(UserError, match="rope_scaling"):
        transformer_config(dict(cfg, rope_scaling={"short_factor": [1.0]}), meta)
