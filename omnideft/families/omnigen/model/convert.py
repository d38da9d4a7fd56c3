"""Convert an ORIGINAL-format OmniGen checkpoint (hub `Shitao/OmniGen-v1`) to diffusers' OmniGenTransformer2DModel.

Source folder: `config.json` (a Phi3Config dict), `model.safetensors` (or a legacy `model.pt`, read with
`torch.load(weights_only=True)` only), optionally `vae/` (a diffusers AutoencoderKL folder) and tokenizer files.
With vae/ and a tokenizer the output is a complete diffusers folder (`save_base`); otherwise only `transformer/`.
The output is written to a temporary sibling and renamed into place; it must not exist or be empty.

`KEY_MAP` below is the whole weight-name mapping, original -> diffusers. Templates: `{n}` is a layer index,
`{p}` is `weight` or `bias`. A tuple on the right means the original tensor is split along dim 0 into those targets
(the fused `qkv_proj` rows are q | k | v, sized heads*head_dim | kv_heads*head_dim | kv_heads*head_dim).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import torch
from accelerate import init_empty_weights
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, OmniGenTransformer2DModel
from safetensors import SafetensorError
from safetensors.torch import load_file
from transformers import AutoTokenizer, PretrainedConfig

from omnideft.errors import UserError
from omnideft.families.omnigen.model.loading import OmniGenComponents, save_base
from omnideft.files import atomic_path

KEY_MAP: dict[str, str | tuple[str, ...]] = {
    # image side (OmniGen/model.py)
    "pos_embed": "patch_embedding.pos_embed",  # fixed 2-D sin-cos buffer (1, S*S, hidden)
    "x_embedder.proj.{p}": "patch_embedding.output_image_proj.{p}",  # noisy output latent patches
    "input_x_embedder.proj.{p}": "patch_embedding.input_image_proj.{p}",  # condition-image latent patches
    "time_token.mlp.0.{p}": "time_token.linear_1.{p}",  # timestep -> one sequence token
    "time_token.mlp.2.{p}": "time_token.linear_2.{p}",
    "t_embedder.mlp.0.{p}": "t_embedder.linear_1.{p}",  # timestep -> adaLN of the final layer
    "t_embedder.mlp.2.{p}": "t_embedder.linear_2.{p}",
    "final_layer.adaLN_modulation.1.{p}": "norm_out.linear.{p}",
    "final_layer.linear.{p}": "proj_out.{p}",
    # Phi-3 backbone (`model.llm`): `llm.` dropped, fused qkv split, o_proj renamed
    "llm.embed_tokens.weight": "embed_tokens.weight",
    "llm.layers.{n}.self_attn.qkv_proj.weight": (
        "layers.{n}.self_attn.to_q.weight",
        "layers.{n}.self_attn.to_k.weight",
        "layers.{n}.self_attn.to_v.weight",
    ),
    "llm.layers.{n}.self_attn.o_proj.weight": "layers.{n}.self_attn.to_out.0.weight",
    "llm.layers.{n}.input_layernorm.weight": "layers.{n}.input_layernorm.weight",
    "llm.layers.{n}.post_attention_layernorm.weight": "layers.{n}.post_attention_layernorm.weight",
    "llm.layers.{n}.mlp.gate_up_proj.weight": "layers.{n}.mlp.gate_up_proj.weight",
    "llm.layers.{n}.mlp.down_proj.weight": "layers.{n}.mlp.down_proj.weight",
    "llm.norm.weight": "norm.weight",
}

_FIELDS = {"n": r"(?P<n>\d+)", "p": r"(?P<p>weight|bias)"}


def _regex(template: str) -> re.Pattern:
    out, pos = "", 0
    for m in re.finditer(r"\{(\w+)\}", template):
        out += re.escape(template[pos : m.start()]) + _FIELDS[m.group(1)]
        pos = m.end()
    return re.compile("^" + out + re.escape(template[pos:]) + "$")


_FORWARD = [(_regex(src), dst) for src, dst in KEY_MAP.items()]
_BACKWARD = [(_regex(d), src) for src, dst in KEY_MAP.items() for d in (dst if isinstance(dst, tuple) else (dst,))]


def original_key_for(diffusers_key: str) -> str | None:
    """The original checkpoint key a diffusers key comes from (None if the table has no entry)."""
    for rx, src in _BACKWARD:
        m = rx.match(diffusers_key)
        if m:
            return src.format(**m.groupdict())
    return None


def original_to_diffusers_state_dict(sd: dict[str, torch.Tensor], num_heads: int,
                                     num_kv_heads: int | None = None) -> dict[str, torch.Tensor]:
    """Rename (and split the fused qkv of) an original OmniGen state dict. Unknown keys -> UserError naming them.

    Split tensors are cloned, so the result shares no storage (safetensors refuses shared tensors)."""
    num_kv_heads = num_kv_heads or num_heads
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for key, tensor in sd.items():
        for rx, dst in _FORWARD:
            m = rx.match(key)
            if m:
                break
        else:
            unknown.append(key)
            continue
        fields = m.groupdict()
        if isinstance(dst, str):
            out[dst.format(**fields)] = tensor
            continue
        rows, hidden = tensor.shape[0], tensor.shape[-1]
        head_dim = hidden // num_heads
        sizes = [num_heads * head_dim, num_kv_heads * head_dim, num_kv_heads * head_dim]
        if sum(sizes) != rows or head_dim * num_heads != hidden:
            raise UserError(f"{key} has shape {tuple(tensor.shape)}; expected {sum(sizes)} rows for "
                            f"{num_heads} heads / {num_kv_heads} kv heads of hidden size {hidden}")
        for name, part in zip(dst, torch.split(tensor, sizes, dim=0)):
            out[name.format(**fields)] = part.clone()
    if unknown:
        raise UserError(f"original OmniGen checkpoint has {len(unknown)} unknown key(s): {_names(unknown)}")
    return out


def transformer_config(cfg: dict, sd: dict[str, torch.Tensor]) -> dict:
    """diffusers OmniGenTransformer2DModel kwargs from the original Phi3 config.json plus weight shapes."""
    required = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size",
                "rope_scaling")
    missing = [k for k in required if cfg.get(k) is None]
    if missing:
        raise UserError(f"config.json lacks {', '.join(missing)}")
    rope = cfg["rope_scaling"]
    head_dim = cfg["hidden_size"] // cfg["num_attention_heads"]
    if not isinstance(rope, dict) or any(len(rope.get(k) or ()) != head_dim // 2
                                         for k in ("short_factor", "long_factor")):
        raise UserError(f"config.json rope_scaling needs short_factor and long_factor of length {head_dim // 2}")
    for key in ("pos_embed", "x_embedder.proj.weight", "time_token.mlp.0.weight"):
        if key not in sd:
            raise UserError(f"original OmniGen checkpoint is missing {key}")
    out_ch, in_ch, patch, _ = sd["x_embedder.proj.weight"].shape
    grid = math.isqrt(sd["pos_embed"].shape[1])
    if grid * grid != sd["pos_embed"].shape[1]:
        raise UserError(f"pos_embed has {sd['pos_embed'].shape[1]} rows, not a square grid")
    theta = cfg.get("rope_theta", 10000.0)
    return dict(
        in_channels=int(in_ch),
        patch_size=int(patch),
        hidden_size=cfg["hidden_size"],
        rms_norm_eps=cfg.get("rms_norm_eps", 1e-5),
        num_attention_heads=cfg["num_attention_heads"],
        num_key_value_heads=cfg.get("num_key_value_heads") or cfg["num_attention_heads"],
        intermediate_size=cfg["intermediate_size"],
        num_layers=cfg["num_hidden_layers"],
        pad_token_id=cfg.get("pad_token_id", 32000),
        vocab_size=cfg["vocab_size"],
        max_position_embeddings=cfg.get("max_position_embeddings", 4096),
        original_max_position_embeddings=cfg.get("original_max_position_embeddings", 4096),
        rope_base=int(theta) if float(theta).is_integer() else theta,
        rope_scaling={"short_factor": list(rope["short_factor"]), "long_factor": list(rope["long_factor"])},
        pos_embed_max_size=grid,
        time_step_dim=int(sd["time_token.mlp.0.weight"].shape[1]),
    )


def load_original_weights(src: Path) -> dict[str, torch.Tensor]:
    st, pt = src / "model.safetensors", src / "model.pt"
    if st.is_file():
        try:
            return load_file(str(st))
        except (SafetensorError, OSError) as exc:
            raise UserError(f"cannot read {st}: {exc}") from None
    if pt.is_file():
        try:  # weights_only: plain tensors only, never arbitrary pickled objects
            sd = torch.load(str(pt), map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unpickling failure is a bad file
            raise UserError(f"cannot read {pt} as a plain tensor dict (weights_only=True): "
                            f"{str(exc).splitlines()[0]}; convert it to model.safetensors") from None
        if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
            sd = sd["state_dict"]
        if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
            raise UserError(f"{pt} is not a dict of tensors")
        return sd
    raise UserError(f"{src} has neither model.safetensors nor model.pt")


def build_transformer(cfg: dict, sd: dict[str, torch.Tensor]):
    """An OmniGenTransformer2DModel holding exactly the converted tensors (strict: missing/extra -> UserError)."""
    kwargs = transformer_config(cfg, sd)
    converted = original_to_diffusers_state_dict(sd, kwargs["num_attention_heads"], kwargs["num_key_value_heads"])
    with init_empty_weights():  # parameters on meta; buffers (pos_embed, rope) real and then overwritten
        model = OmniGenTransformer2DModel(**kwargs)
    expected = set(model.state_dict())
    missing = sorted(expected - set(converted))
    extra = sorted(set(converted) - expected)
    if missing:
        names = [f"{original_key_for(k) or k}" for k in missing]
        raise UserError(f"original OmniGen checkpoint is missing {len(missing)} key(s): "
                        f"{_names(sorted(set(names)))} (for a {kwargs['num_layers']}-layer config.json)")
    if extra:
        names = [f"{original_key_for(k) or k}" for k in extra]
        raise UserError(f"original OmniGen checkpoint has {len(extra)} key(s) config.json does not account for: "
                        f"{_names(sorted(set(names)))}")
    own = model.state_dict()
    bad = [f"{original_key_for(k)} {tuple(v.shape)} (expected {tuple(own[k].shape)})"
           for k, v in converted.items() if tuple(v.shape) != tuple(own[k].shape)]
    if bad:
        raise UserError(f"original OmniGen checkpoint does not match config.json: {_names(bad)}")
    model.load_state_dict(converted, strict=True, assign=True)
    return model


def convert_original_checkpoint(src_dir: str | Path, out_dir: str | Path) -> Path:
    """Write `out_dir` as a diffusers folder (full pipeline layout if src has vae/ and a tokenizer). Returns out_dir."""
    src, out = Path(src_dir), Path(out_dir)
    if not src.is_dir():
        raise UserError(f"{src} is not a directory")
    if not (src / "config.json").is_file():
        raise UserError(f"{src} has no config.json (the original Phi3 config of OmniGen)")
    if out.exists() and any(out.iterdir()):
        raise UserError(f"output directory {out} exists and is not empty")
    try:
        cfg = json.loads((src / "config.json").read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{src / 'config.json'} is not valid JSON: {exc}") from None
    transformer = build_transformer(cfg, load_original_weights(src))

    has_vae = (src / "vae" / "config.json").is_file()
    has_tok = any((src / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model"))
    with atomic_path(out) as tmp:  # written aside, renamed into place: no half-written output
        if has_vae and has_tok:
            try:
                vae = AutoencoderKL.from_pretrained(str(src / "vae"))
                # config=: keep AutoTokenizer away from config.json, whose legacy Phi-3 "su" rope_scaling
                # fails transformers>=5 validation; the class comes from tokenizer_config.json / tokenizer.json.
                tokenizer = AutoTokenizer.from_pretrained(str(src), config=PretrainedConfig())
            except (OSError, ValueError) as exc:
                raise UserError(f"cannot load vae/ or the tokenizer of {src}: {str(exc).splitlines()[0]}") from None
            scheduler = FlowMatchEulerDiscreteScheduler(invert_sigmas=True, num_train_timesteps=1)
            save_base(OmniGenComponents(transformer, vae, tokenizer, scheduler, str(src)), tmp)
        else:
            tmp.mkdir(parents=True)
            transformer.save_pretrained(tmp / "transformer", safe_serialization=True)
    return out


def _names(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")
