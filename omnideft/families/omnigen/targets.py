"""Target-module presets on diffusers' OmniGenTransformer2DModel.

`attn`: to_q, to_k, to_v, to_out.0 of every block. `all-linear`: every nn.Linear inside the blocks (attention +
mlp.gate_up_proj + mlp.down_proj). `include_embedders=True` adds the time-token / adaLN timestep embedders,
norm_out.linear (adaLN) and proj_out.
"""

from __future__ import annotations

import re

from torch import nn

from omnideft.adapters.targets import linear_names, listed_targets, unknown_preset

_ATTN = re.compile(r"^layers\.\d+\.self_attn\.(to_q|to_k|to_v|to_out\.0)$")
_BLOCK_LINEAR = re.compile(r"^layers\.\d+\.")
_EMBEDDERS = re.compile(r"^(time_token\.linear_[12]|t_embedder\.linear_[12]|norm_out\.linear|proj_out)$")


def target_modules(transformer: nn.Module, preset: str | list[str], include_embedders: bool = False) -> list[str]:
    """Full module names to adapt. `preset` is a preset name or an explicit list of suffixes/names."""
    linears = linear_names(transformer)
    if isinstance(preset, list):
        chosen = listed_targets(transformer, preset)
    elif preset == "attn":
        chosen = [n for n in linears if _ATTN.match(n)]
    elif preset == "all-linear":
        chosen = [n for n in linears if _BLOCK_LINEAR.match(n)]
    else:
        raise unknown_preset(preset)
    if include_embedders:
        chosen += [n for n in linears if _EMBEDDERS.match(n) and n not in chosen]
    return chosen
