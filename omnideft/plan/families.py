"""Which family's plan entry (family.plan_entry(): sizing.shapes.PlanFamily) a recipe's model means. Shared planner
code asks `plan_family`; it names no family."""

from __future__ import annotations

from pathlib import Path

from omnideft.families.registry import get_family, is_preset, resolve_family
from omnideft.sizing.shapes import PlanFamily


def plan_family(model) -> PlanFamily:
    """The family of a recipe's `model` section. A family named for a folder that is not there yet is planned from
    its shipped configs (planning comes before the download); otherwise as the trainer resolves it."""
    name, family = model.name, model.family
    if family != "auto" and not is_preset(name) and not Path(name).expanduser().is_dir():
        return get_family(family).plan_entry()
    return resolve_family(name, family).plan_entry()
