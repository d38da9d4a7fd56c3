"""Target-module presets for adapters on diffusers' OmniGenTransformer2DModel and on omnideft's OmniGen2 transformer.

OmniGen: `attn`: to_q, to_k, to_v, to_out.0 of every block. `all-linear`: every nn.Linear inside the blocks
(attention + mlp.gate_up_proj + mlp.down_proj). `include_embedders=True` adds the time-token / adaLN
timestep embedders, norm_out.linear (adaLN) and proj_out.
OmniGen2 (told apart by its `ref_image_refiner`): the blocks are the main `layers` and the three refiners (noise,
reference image, caption). `attn`: their to_q, to_k, to_v, to_out.0 (the targets of the published LoRA recipe).
`all-linear`: every nn.Linear of the transformer — the blocks' (attention, SwiGLU linear_1/2/3, adaLN
norm1.linear) and the patch, timestep and caption embedders' and norm_out's (OmniGen2's default is DEFT on every
linear of its diffusion transformer; `include_embedders` changes nothing there).
"""

from __future__ import annotations

import re

from torch import nn

from omnideft.errors import UserError

_ATTN = re.compile(r"^layers\.\d+\.self_attn\.(to_q|to_k|to_v|to_out\.0)$")
_BLOCK_LINEAR = re.compile(r"^layers\.\d+\.")
_EMBEDDERS = re.compile(r"^(time_token\.linear_[12]|t_embedder\.linear_[12]|norm_out\.linear|proj_out)$")

_OG2_BLOCK = re.compile(r"^(layers|noise_refiner|ref_image_refiner|context_refiner)\.\d+\.")
_OG2_ATTN = re.compile(_OG2_BLOCK.pattern + r"attn\.(to_q|to_k|to_v|to_out\.0)$")

TARGET_PRESETS = ("attn", "all-linear")


def target_module_names(transformer: nn.Module, preset: str | list[str], include_embedders: bool = False) -> list[str]:
    """Full module names to adapt. `preset` is a preset name or an explicit list of suffixes/names."""
    linears = [name for name, mod in transformer.named_modules() if isinstance(mod, nn.Linear)]
    omnigen2 = hasattr(transformer, "ref_image_refiner")
    if isinstance(preset, list):
        chosen = [n for n in linears if any(n == s or n.endswith("." + s) for s in preset)]
    elif preset == "attn":
        chosen = [n for n in linears if (_OG2_ATTN if omnigen2 else _ATTN).match(n)]
    elif preset == "all-linear":
        chosen = list(linears) if omnigen2 else [n for n in linears if _BLOCK_LINEAR.match(n)]
    else:
        raise UserError(f"adapter.targets {preset!r} is not a preset {TARGET_PRESETS} or a list of module names")
    if include_embedders and omnigen2:
        chosen += [n for n in linears if n not in chosen and not _OG2_BLOCK.match(n)]
    elif include_embedders:
        chosen += [n for n in linears if _EMBEDDERS.match(n) and n not in chosen]
    return chosen
