"""omnideft export ADAPTER --format F --out DIR: an adapter as a plain LoRA file for the programs its base's family
declares (PEFT, diffusers, ComfyUI, ...: docs/export.md) or merged into its base."""

from __future__ import annotations

from omnideft.commands.args import COUNT
from omnideft.commands.family_options import format_choices, model_choices


def add_parser(sub):
    x = sub.add_parser("export", help="export an adapter as a plain LoRA for a program that loads it, or merged",
                       description="Every adapted layer exports its method's exact change: LoRA factors (e.g. DEFT, "
                                   "PaRa, LoRA) as they are; a dense delta (e.g. SODA) merged or as its best rank-r "
                                   "LoRA (the error is reported).")
    x.add_argument("adapter", help="adapter folder")
    x.add_argument("--format", required=True, help=f"what the base's family offers: {format_choices()} (which "
                   "program loads each: docs/export.md)")
    x.add_argument("--base", help=f"base model: {model_choices()} (default: the adapter's base; the family is the "
                   "adapter's)")
    x.add_argument("--out", required=True, help="output folder (merged: a model folder in the base family's layout)")
    x.add_argument("--rank", type=COUNT, help="rank for dense deltas (e.g. SODA; default: adapter rank)")
    return x


def run(args) -> int:
    from omnideft.adapters.folder import resolve_model_name
    from omnideft.export.run import run_export

    report = run_export(args.adapter, args.format, resolve_model_name(args.base, args.adapter), args.out,
                        rank=args.rank)
    print(report)
    return 0
