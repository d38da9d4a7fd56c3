"""Which family a recipe's model means for planning: its plan entry (family.plan_entry(): sizing.shapes.PlanFamily)
and the recipe keys a `train.memory` preset may set that its trainer does not take. Shared planner code asks these;
it names no family."""

from __future__ import annotations

from pathlib import Path

from omnideft.families.family import RECIPE_FEATURES, ModelFamily
from omnideft.families.registry import get_family, is_preset, resolve_family
from omnideft.sizing.shapes import PlanFamily

PRESET_KEYS = ("model.quantize", "data.latents")  # what a preset may set that a family's trainer may not take


def model_family(model) -> ModelFamily:
    """The family of a recipe's `model` section. A family named for a folder that is not there yet is planned from
    its shipped configs (planning comes before the download); otherwise as the trainer resolves it."""
    name, family = model.name, model.family
    if family != "auto" and not is_preset(name) and not Path(name).expanduser().is_dir():
        return get_family(family)
    return resolve_family(name, family)


def plan_family(model) -> PlanFamily:
    return model_family(model).plan_entry()


def trainer_refuses(family: ModelFamily) -> tuple[str, ...]:
    """The recipe keys a preset may set that `family`'s trainer does not take (from its `unsupported`)."""
    return tuple(key for key in PRESET_KEYS if not family.supports(RECIPE_FEATURES[key]))
