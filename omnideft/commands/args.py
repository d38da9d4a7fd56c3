"""What several verbs parse alike: number options checked when parsed, naming the option and the allowed range
(omnideft/options.py), and a recipe followed by `section.key=value` overrides."""

from __future__ import annotations

import os

from omnideft.options import bounded

COUNT, SIDE, SCALE = bounded(int, ">= 1"), bounded(int, ">= 16", multiple=16), bounded(float, ">= 0")


def add_family_flag(parser) -> None:
    """`--family`: which registered family a model name means; a preset name (e.g. 'tiny') exists in several."""
    from omnideft.families.registry import AUTO, family_names

    parser.add_argument("--family", default=AUTO, choices=[AUTO, *family_names()],
                        help="model family; auto = read from the base folder or the adapter (docs/models.md)")


def recipe_and_overrides(args) -> tuple[str | None, list[str]]:
    """The recipe file and the overrides of `VERB [RECIPE] [section.key=value ...]`; a first word that is an override
    and not a file means only overrides (the recipe's defaults)."""
    overrides, recipe_path = list(args.overrides), args.recipe
    if recipe_path and "=" in recipe_path and not os.path.exists(recipe_path):  # only overrides, no file
        overrides.insert(0, recipe_path)
        recipe_path = None
    return recipe_path, overrides
