"""omnideft export ADAPTER --format F --out DIR: an adapter as a plain LoRA (PEFT / diffusers / ComfyUI / kohya keys,
or a family's own format) or merged into its base."""

from __future__ import annotations

from omnideft.commands.args import COUNT
from omnideft.commands.family_options import model_choices
from omnideft.families.registry import all_export_formats


def add_parser(sub):
    x = sub.add_parser("export", help="export an adapter as a plain LoRA (PEFT/diffusers/ComfyUI/kohya) or merged",
                       description="Every adapted layer exports its method's exact change: LoRA factors (e.g. DEFT, "
                                   "PaRa, LoRA) as they are; a dense delta (e.g. SODA) merged or as its best rank-r "
                                   "LoRA (the error is reported).")
    x.add_argument("adapter", help="adapter folder")
    x.add_argument("--format", required=True, help=f"{' | '.join(all_export_formats())} (which a base takes: "
                   "docs/adapters.md)")
    x.add_argument("--base", help=f"base model: {model_choices()} (default: the adapter's base; the family is the "
                   "adapter's)")
    x.add_argument("--out", required=True, help="output folder (merged: a diffusers pipeline folder)")
    x.add_argument("--rank", type=COUNT, help="rank for dense deltas (e.g. SODA; default: adapter rank)")
    return x


def run(args) -> int:
    from omnideft.adapters.folder import resolve_model_name
    from omnideft.export.run import run_export

    report = run_export(args.adapter, args.format, resolve_model_name(args.base, args.adapter), args.out,
                        rank=args.rank)
    print(report)
    return 0
