"""What `omnideft plan` asks a model family for, one entry per family: its component configs for a model name, how
to count them into ModelShapes (which carry the family's activation model), the sequence its workload makes, and
the recipe keys its trainer does not take yet (presets that set them are planned, not applied). Shared planner code
asks `plan_family`; it names no family."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from omnideft.families.omnigen2.batch import MAX_INPUT_PIXELS  # the published input budgets by count
from omnideft.families.registry import get_family, is_preset, resolve_family
from omnideft.plan.omnigen2 import omnigen2_configs, omnigen2_shapes
from omnideft.plan.shapes import ModelShapes, measure_shapes, model_configs


@dataclass(frozen=True)
class PlanFamily:
    name: str
    configs: Callable[[str], tuple[dict, str]]  # model.name -> (configs by component, where they came from or "")
    count: Callable[[dict, object], ModelShapes]  # (configs, adapter spec) -> sizes, counted on the meta device
    workload: dict = field(default_factory=dict)  # Workload fields the family fixes
    trainer_refuses: tuple[str, ...] = ()  # recipe keys a preset may set that its trainer refuses so far

    def shapes(self, name: str, spec) -> ModelShapes:
        import dataclasses

        configs, source = self.configs(name)
        return dataclasses.replace(self.count(configs, spec), source=source)


def _omnigen_configs(name: str) -> tuple[dict, str]:
    transformer, vae = model_configs(name)
    return {"transformer": transformer, "vae": vae}, ""


def _omnigen_count(configs: dict, spec) -> ModelShapes:
    return measure_shapes(configs["transformer"], configs["vae"], spec)


PLAN_FAMILIES = {
    "omnigen": PlanFamily("omnigen", _omnigen_configs, _omnigen_count),
    "omnigen2": PlanFamily("omnigen2", omnigen2_configs, omnigen2_shapes,
                           workload={"time_tokens": 0, "input_pixels": MAX_INPUT_PIXELS},
                           trainer_refuses=("model.quantize", "data.latents")),
}


def plan_family(model) -> PlanFamily:
    """The family of a recipe's `model` section. A family named for a folder that is not there yet is planned from
    its shipped configs (planning comes before the download); otherwise as the trainer resolves it."""
    name, family = model.name, model.family
    if family != "auto" and not is_preset(name) and not Path(name).expanduser().is_dir():
        return PLAN_FAMILIES[get_family(family).name]
    return PLAN_FAMILIES[resolve_family(name, family).name]
