"""omnideft plan RECIPE: the predicted peak GPU memory of a recipe by component and the preset that fits, from the
model's config alone (docs/memory.md)."""

from __future__ import annotations

from omnideft.commands.args import COUNT, recipe_and_overrides
from omnideft.options import bounded


def add_parser(sub):
    pl = sub.add_parser("plan", help="predicted peak GPU memory of a recipe by component, and the preset that fits",
                        description="omnideft plan RECIPE [section.key=value ...] [--gpu-memory 24GB] [--gpus N]. "
                                    "Reads only the model's config (the real OmniGen's ships with omnideft): no "
                                    "weights, no GPU (docs/memory.md).")
    pl.add_argument("recipe", nargs="?", help="recipe YAML")
    pl.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. train.memory=24gb")
    pl.add_argument("--gpu-memory", metavar="SIZE", help="GPU size, e.g. 24GB: which presets fit, the cheapest one; "
                    "exit 2 when the recipe's train.memory preset does not fit")
    pl.add_argument("--gpus", type=COUNT, default=1, help="GPUs (ZeRO partitioning of the presets that use it)")
    pl.add_argument("--input-images", type=bounded(int, ">= 0"),
                    help="input images per sample (default: the most among the first samples of the recipe's local "
                         "shards, else 2)")
    pl.add_argument("--text-tokens", type=COUNT,
                    help="text tokens per sample (default: the model family's, e.g. the length its pipeline pads "
                         "prompts to; 128 when it declares none)")
    return pl


def run(args) -> int:
    from omnideft.plan.report import run_plan
    from omnideft.train.recipe import load_recipe

    return run_plan(load_recipe(*recipe_and_overrides(args)), args.gpu_memory, args.gpus, args.input_images,
                    args.text_tokens)
