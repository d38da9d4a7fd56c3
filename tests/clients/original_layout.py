"""An OmniGen (v1) base written in the ORIGINAL package's layout (what `OmniGen.from_pretrained(folder)` and
`OmniGenProcessor.from_pretrained(folder)` read): `config.json` (a Phi3Config), `model.safetensors` with the original
keys, `vae/`, and the tokenizer at the top. The keys go through model/convert.py's KEY_MAP the other way round (the
fused qkv_proj is to_q | to_k | to_v stacked in the map's order)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors.torch import save_file

from omnideft.families.omnigen.model.convert import KEY_MAP, original_key_for


def to_original_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """diffusers OmniGenTransformer2DModel state dict -> the original OmniGen model's."""
    out = {}
    for key, tensor in sd.items():
        orig = original_key_for(key)
        assert orig is not None, f"convert.KEY_MAP has no entry for {key}"
        parts = KEY_MAP.get(re.sub(r"\.\d+\.", ".{n}.", orig, count=1))
        if not isinstance(parts, tuple):
            out[orig] = tensor.detach().clone().contiguous()
        elif orig not in out:  # fused: every split part, in the map's order
            layer = re.search(r"\.(\d+)\.", orig).group(1)
            out[orig] = torch.cat([sd[p.replace("{n}", layer)] for p in parts]).detach().contiguous()
    return out


def phi3_config(transformer_config) -> dict:
    """The original config.json (a Phi3Config) of a diffusers OmniGen transformer config."""
    c = transformer_config
    return {
        "architectures": ["Phi3ForCausalLM"], "model_type": "phi3", "hidden_act": "silu",
        "hidden_size": c["hidden_size"], "num_hidden_layers": c["num_layers"],
        "num_attention_heads": c["num_attention_heads"], "num_key_value_heads": c["num_key_value_heads"],
        "intermediate_size": c["intermediate_size"], "vocab_size": c["vocab_size"], "rms_norm_eps": c["rms_norm_eps"],
        "rope_theta": float(c["rope_base"]), "rope_scaling": dict(c["rope_scaling"], type="su"),
        "max_position_embeddings": c["max_position_embeddings"],
        "original_max_position_embeddings": c["original_max_position_embeddings"],
        "pad_token_id": c["pad_token_id"], "bos_token_id": 1, "eos_token_id": 2, "tie_word_embeddings": False,
        "attention_dropout": 0.0, "embd_pdrop": 0.0, "resid_pdrop": 0.0, "sliding_window": None,
    }


def write_original_weights(transformer, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    save_file(to_original_state_dict(transformer.state_dict()), str(folder / "model.safetensors"))
    return folder / "model.safetensors"


def write_original_base(components, folder: Path) -> Path:
    """The whole base (components: omnideft's OmniGenComponents) in the original package's folder layout."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(phi3_config(components.transformer.config), indent=2))
    write_original_weights(components.transformer, folder)
    components.vae.save_pretrained(str(folder / "vae"))
    # the tokenizer as a plain fast tokenizer: its tokenizer.json, and a config every transformers version reads
    components.tokenizer.backend_tokenizer.save(str(folder / "tokenizer.json"))
    tok = components.tokenizer
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": tok.bos_token, "eos_token": tok.eos_token,
        "unk_token": tok.unk_token, "pad_token": tok.pad_token, "model_max_length": tok.model_max_length}))
    return folder
