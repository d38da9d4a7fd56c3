"""omnideft convert-original SRC OUT: a checkpoint in a family's original, pre-diffusers format (OmniGen's
published one by default) written as a folder the family loads (ModelFamily.convert_original)."""

from __future__ import annotations

from omnideft.families.registry import default_family, family_names, get_family


def add_parser(sub):
    v = sub.add_parser("convert-original", help="convert an original-format OmniGen checkpoint to diffusers layout")
    v.add_argument("src")
    v.add_argument("out")
    v.add_argument("--family", default=default_family().name, choices=family_names(),
                   help="whose original format SRC is (default: %(default)s)")
    return v


def run(args) -> int:
    print(f"converted: {get_family(args.family).convert_original(args.src, args.out)}")
    return 0
