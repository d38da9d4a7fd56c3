"""Target-module presets on omnideft's OmniGen2 transformer.

The blocks are the main `layers` and the three refiners (noise, reference image, caption). `attn`: their to_q, to_k,
to_v, to_out.0 (the targets of the published LoRA recipe). `all-linear`: every nn.Linear of the transformer — the
blocks' (attention, SwiGLU linear_1/2/3, adaLN norm1.linear) and the patch, timestep and caption embedders' and
norm_out's (OmniGen2's default is DEFT on every linear of its diffusion transformer; `include_embedders` changes
nothing there). `include_embedders=True` adds every linear outside the blocks.
"""

from __future__ import annotations

import re

from torch import nn

from omnideft.adapters.targets import preset_targets

_BLOCK = re.compile(r"^(layers|noise_refiner|ref_image_refiner|context_refiner)\.\d+\.")
_ATTN = re.compile(_BLOCK.pattern + r"attn\.(to_q|to_k|to_v|to_out\.0)$")


def target_modules(transformer: nn.Module, preset: str | list[str], include_embedders: bool = False) -> list[str]:
    """Full module names to adapt. `preset` is a preset name or an explicit list of suffixes/names."""
    return preset_targets(transformer, preset, include_embedders, attn=_ATTN.match, all_linear=lambda name: True,
                          embedders=lambda name: not _BLOCK.match(name))
