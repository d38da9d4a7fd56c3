"""The allowed range of every number `generate` takes, from its command line or from a line of `--jobs` (device,
dtype and adapter lists: families/generator.py)."""

from __future__ import annotations

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


def check_number(key: str, value, name: str) -> None:
    """`value` of setting `key` (a NUMBER_BOUNDS key) within its range; `name` is how the user wrote it ("--height",
    "'height'"). Its type is the caller's to check (argparse, or the jobs parser)."""
    bounds, multiple = NUMBER_BOUNDS[key]
    check_value(name, value, bounds, multiple)


def check_seeds(seed: int, n: int, name: str) -> None:
    """Image k of n is rendered with seed + k: the last one must still be a seed."""
    if seed + n - 1 > MAX_SEED:
        raise UserError(f"{name} {seed} with n {n}: image k takes seed + k, which must stay <= {MAX_SEED}")
