"""The offline demos: `omnideft demo --family NAME` runs the demo the family's `demo_preset` names, with its
settings: `study` (run.py: the small pretrained OmniGen learns new tasks with a DEFT adapter, measured) or `tiny-run`
(tiny_run.py: a short run on a family's random `tiny` whose loss falls)."""

from __future__ import annotations

import inspect
from importlib import import_module

from omnideft.errors import UserError
from omnideft.families.registry import all_families, get_family

DEMOS = {"study": "omnideft.demo.run:run_demo", "tiny-run": "omnideft.demo.tiny_run:run_tiny_run_demo"}


def demo_settings(family: str) -> dict:
    """The demo a family declares and its default settings; one line for a family without one."""
    chosen = get_family(family)
    if chosen.demo_preset is None:
        have = ", ".join(f.name for f in all_families() if f.demo_preset is not None)
        raise UserError(f"demo --family {family}: {chosen.title} has no demo preset (families with a demo: {have})")
    return dict(chosen.demo_preset)


def run_family_demo(family: str, out_dir: str, **settings) -> tuple[str, dict]:
    """Run the family's demo; `settings` left None take the preset's, one the demo does not take is one line.
    Returns (the demo's name, its result)."""
    preset = demo_settings(family)
    kind = preset.pop("demo")
    module, function = DEMOS[kind].split(":")
    run = getattr(import_module(module), function)
    given = {k: v for k, v in settings.items() if v is not None}
    takes = inspect.signature(run).parameters
    if foreign := [k for k in given if k not in takes]:
        raise UserError(f"demo --family {family}: its {kind} demo takes no "
                        f"{', '.join('--' + k.replace('_', '-') for k in foreign)}")
    if "family" in takes:  # a demo that runs on any family (tiny-run) is told which
        given["family"] = family
    return kind, run(out_dir, **{**preset, **given})


# The study demo's defaults (run.py's keyword defaults): the preset of the family that declares it. Light to import.
DEFAULTS = next({k: v for k, v in f.demo_preset.items() if k != "demo"} for f in all_families()
                if f.demo_preset is not None and f.demo_preset["demo"] == "study")
