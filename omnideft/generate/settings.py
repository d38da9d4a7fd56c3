"""Arguments every generator takes (OmniGen's `Generator`, `OmniGen2Generator`): device, dtype, adapter lists."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from omnideft.adapters.compose import parse_adapter_arg
from omnideft.errors import UserError

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(device: str) -> str:
    return ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device


def resolve_dtype(dtype: str, device: str) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    if dtype not in DTYPES:
        raise UserError(f"dtype {dtype!r} is not one of auto, {', '.join(DTYPES)}")
    return DTYPES[dtype]


def as_adapter_list(adapters: Sequence) -> list[tuple[str, float]]:
    """"PATH[:w]" strings, folders (weight 1) or (path, weight) pairs -> [(path, weight)]."""
    out = []
    for a in adapters:
        if isinstance(a, str):
            out.append(parse_adapter_arg(a))
        elif isinstance(a, Path):
            out.append((str(a), 1.0))
        else:
            out.append((str(a[0]), float(a[1])))
    return out
