"""Arguments every generator takes (OmniGen's `Generator`, `OmniGen2Generator`): device, dtype, adapter lists, and
the allowed range of every number `generate` takes, from its command line or from a line of `--jobs`."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from omnideft.adapters.compose import parse_adapter_arg
from omnideft.errors import UserError
from omnideft.options import check_value

SIDE_STEP = 16  # OmniGen's output grid: 8x VAE, 2x2 patches
MAX_SEED = 2**64 - 1  # torch.Generator.manual_seed takes [-2**63, 2**64); a negative seed only aliases a positive one
# (bounds, multiple) of each number, in options.check_value's terms: the one table the CLI and jobs lines share.
NUMBER_BOUNDS: dict[str, tuple[str, int | None]] = {
    "steps": (">= 1", None),
    "seed": (f"[0, {MAX_SEED}]", None),
    "n": (">= 1", None),
    "height": (f">= {SIDE_STEP}", SIDE_STEP),
    "width": (f">= {SIDE_STEP}", SIDE_STEP),
    "guidance": (">= 0", None),
    "image_guidance": (">= 0", None),
    "max_input_image_size": (f">= {SIDE_STEP}", None),
}

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


def check_number(key: str, value, name: str) -> None:
    """`value` of setting `key` (a NUMBER_BOUNDS key) within its range; `name` is how the user wrote it ("--height",
    "'height'"). Its type is the caller's to check (argparse, or the jobs parser)."""
    bounds, multiple = NUMBER_BOUNDS[key]
    check_value(name, value, bounds, multiple)


def check_seeds(seed: int, n: int, name: str) -> None:
    """Image k of n is rendered with seed + k: the last one must still be a seed."""
    if seed + n - 1 > MAX_SEED:
        raise UserError(f"{name} {seed} with n {n}: image k takes seed + k, which must stay <= {MAX_SEED}")
