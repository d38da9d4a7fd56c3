"""omnideft convert-original SRC OUT: an original-format OmniGen checkpoint in diffusers layout."""

from __future__ import annotations


def add_parser(sub):
    v = sub.add_parser("convert-original", help="convert an original-format OmniGen checkpoint to diffusers layout")
    v.add_argument("src")
    v.add_argument("out")
    return v


def run(args) -> int:
    from omnideft.families.omnigen.model.convert import convert_original_checkpoint

    print(f"converted: {convert_original_checkpoint(args.src, args.out)}")
    return 0
