"""OmniGen (v1)'s LoRA key rules for export (family.lora_keys): the official OmniGen package (`--format omnigen`,
PEFT's layout) reads the original OmniGen checkpoint's module names (model/convert.py's KEY_MAP), where q/k/v are
one fused qkv_proj. (ComfyUI and kohya have no OmniGen (v1) model: the family offers no file for them.)"""

from __future__ import annotations

import re

import torch
from torch import nn


def lora_keys(fmt: str, factors: dict[str, tuple[torch.Tensor, torch.Tensor]], transformer: nn.Module) -> dict:
    """`omnigen`: the original path (export adds PEFT's `base_model.model.`); the only format keyed by the family."""
    return fused_original(factors, transformer)


def fused_original(factors: dict[str, tuple[torch.Tensor, torch.Tensor]], transformer: nn.Module) -> dict:
    """Rename to the original OmniGen module paths; the split to_q/to_k/to_v LoRAs become one qkv_proj LoRA
    (B block-diagonal, A stacked: exact, rank r_q + r_k + r_v)."""
    from omnideft.families.omnigen.model.convert import KEY_MAP, original_key_for

    modules = dict(transformer.named_modules())
    groups: dict[str, list[str]] = {}
    for name in factors:
        orig = original_key_for(name + ".weight")
        groups.setdefault(orig[: -len(".weight")] if orig else name, []).append(name)
    out = {}
    for orig, names in groups.items():
        parts = KEY_MAP.get(re.sub(r"\.\d+\.", ".{n}.", orig + ".weight"))
        if not isinstance(parts, tuple):
            out[orig] = factors[names[0]]
            continue
        layer = re.search(r"\.(\d+)\.", orig).group(1)
        bs, as_ = [], []
        for part in parts:
            part = part.replace("{n}", layer)[: -len(".weight")]
            if part in factors:
                b, a = factors[part]
            else:  # this projection is not adapted: a rank-0 block
                lin = modules[part]
                b, a = torch.zeros(lin.out_features, 0), torch.zeros(0, lin.in_features)
            bs.append(b)
            as_.append(a)
        out[orig] = (torch.block_diag(*bs), torch.cat(as_, 0))
    return out


