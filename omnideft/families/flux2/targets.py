"""Target-module presets on diffusers' Flux2Transformer2DModel.

`attn`: the default targets of diffusers' own FLUX.2 [klein] LoRA script
(examples/dreambooth/train_dreambooth_lora_flux2_klein.py): the double-stream blocks' image-stream to_q, to_k, to_v,
to_out.0 and the single-stream blocks' fused to_qkv_mlp_proj and to_out. `all-linear`: every nn.Linear of the
transformer - both streams' attention and SwiGLU projections, the shared modulations, the timestep, image and text
embedders, norm_out and proj_out (omnideft's default for a diffusion transformer; `include_embedders` changes nothing
there). `include_embedders=True` adds every linear outside the blocks to `attn`.
"""

from __future__ import annotations

import re

from torch import nn

from omnideft.adapters.targets import preset_targets

_BLOCK = re.compile(r"^(transformer_blocks|single_transformer_blocks)\.\d+\.")
_ATTN = re.compile(r"^(transformer_blocks\.\d+\.attn\.(to_q|to_k|to_v|to_out\.0)"
                   r"|single_transformer_blocks\.\d+\.attn\.(to_qkv_mlp_proj|to_out))$")


def target_modules(transformer: nn.Module, preset: str | list[str], include_embedders: bool = False) -> list[str]:
    """Full module names to adapt. `preset` is a preset name or an explicit list of suffixes/names."""
    return preset_targets(transformer, preset, include_embedders, attn=_ATTN.match, all_linear=lambda name: True,
                          embedders=lambda name: not _BLOCK.match(name))
