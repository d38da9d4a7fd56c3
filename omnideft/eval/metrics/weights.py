"""Read a metric's own weights file (safetensors only), and convert a published `.pth` state dict to it once:

    python -m omnideft.eval.metrics.weights SRC.pth OUT.safetensors

The conversion unpickles with `torch.load(weights_only=True)`, so only tensors and plain containers are accepted.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from omnideft.errors import UserError
from omnideft.files import atomic_path


def read_weights(path: str | None, flag: str) -> dict[str, torch.Tensor]:
    if not path:
        raise UserError(f"{flag} FILE is required (a .safetensors file; see docs/eval.md for where to get it)")
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{flag} {path}: file not found")
    if p.suffix != ".safetensors":
        raise UserError(f"{flag} {path}: expected a .safetensors file; convert a .pth once with "
                        f"python -m omnideft.eval.metrics.weights {path} {p.with_suffix('.safetensors')}")
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(p))
    except (SafetensorError, OSError, ValueError) as exc:
        raise UserError(f"{flag} {path}: not a readable safetensors file ({str(exc).splitlines()[0]})") from None


def convert_pth(src: str, dst: str) -> Path:
    from safetensors.torch import save_file

    try:
        state = torch.load(src, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for foreign or unsafe pickles
        raise UserError(f"{src}: cannot be read with torch.load(weights_only=True) ({type(exc).__name__})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{src}: expected a state dict of tensors")
    out = Path(dst)
    with atomic_path(out) as tmp:
        save_file({k: v.contiguous() for k, v in state.items()}, str(tmp))
    return out


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m omnideft.eval.metrics.weights SRC.pth OUT.safetensors", file=sys.stderr)
        return 2
    try:
        print(f"wrote {convert_pth(*args)}")
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
