"""Target-module presets on diffusers' OmniGenTransformer2DModel.

`attn`: to_q, to_k, to_v, to_out.0 of every block. `all-linear`: every nn.Linear inside the blocks (attention +
mlp.gate_up_proj + mlp.down_proj). `include_embedders=True` adds the time-token / adaLN timestep embedders,
norm_out.linear (adaLN) and proj_out.
"""

from __future__ import annotations

import re

from torch import nn

from omnideft.adapters.targets import preset_targets

_ATTN = re.compile(r"^layers\.\d+\.self_attn\.(to_q|to_k|to_v|to_out\.0)$")
_BLOCK_LINEAR = re.compile(r"^layers\.\d+\.")
_EMBEDDERS = re.compile(r"^(time_token\.linear_[12]|t_embedder\.linear_[12]|norm_out\.linear|proj_out)$")


def target_modules(transformer: nn.Module, preset: str | list[str], include_embedders: bool = False) -> list[str]:
    """Full module names to adapt. `preset` is a preset name or an explicit list of suffixes/names."""
    return preset_targets(transformer, preset, include_embedders, attn=_ATTN.match, all_linear=_BLOCK_LINEAR.match,
                          embedders=_EMBEDDERS.match)
