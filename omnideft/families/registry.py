"""The model families: name (the recipe's `model.family`, `--family`) -> "module:attribute" of its ModelFamily
(family.py), and the one resolver that says which family a model name, a folder or an adapter means.

Adding a family is its own folder plus one line here (or one `register_family` call, e.g. a test's toy family); the
recipe's choices, the CLI's `--family` and family flags, detection, every verb and the conformance suite
(tests/test_families.py) ask this table. Families are imported on first use, so reading the names needs neither
torch nor diffusers. Every function returning a family returns that ModelFamily instance (family.py, which imports
this module: no import back, so no annotation names its class here).
"""

from __future__ import annotations

import json
from functools import cache
from importlib import import_module
from pathlib import Path

from omnideft.errors import UserError

FAMILIES = {
    "omnigen": "omnideft.families.omnigen:FAMILY",
    "omnigen2": "omnideft.families.omnigen2:FAMILY",
    "flux2": "omnideft.families.flux2:FAMILY",
}
BUILT_IN = dict(FAMILIES)  # the families omnideft ships (the generated docs list these)
AUTO = "auto"
UNRECORDED = "omnigen"  # adapters written before families were recorded were trained on OmniGen (v1)


def register_family(name: str, target: str) -> None:
    """Add a family ("module:attribute" of its ModelFamily instance) under `name`."""
    FAMILIES[name] = target
    get_family.cache_clear()


def family_names() -> tuple[str, ...]:
    return tuple(FAMILIES)


@cache
def get_family(name: str):
    """The family called `name`; anything else is one line naming the choices."""
    if name not in FAMILIES:
        raise UserError(f"model family {name!r} is not one of {', '.join(FAMILIES)}")
    module, attribute = FAMILIES[name].split(":")
    family = getattr(import_module(module), attribute)
    family.name = name
    return family


def all_families():
    return [get_family(name) for name in FAMILIES]


def all_export_formats() -> tuple[str, ...]:
    """Every `omnideft export --format` some family writes (each family's `export_formats`, in registry order)."""
    return tuple(dict.fromkeys(fmt for family in all_families() for fmt in family.export_formats))


def default_family():
    return next(f for f in all_families() if f.default)


def family_of_record(recorded: str | None):
    """The family an adapter's record (`base.family` of its omnideft.json, None when absent) names."""
    if recorded is not None and recorded not in FAMILIES:
        raise UserError(f"the adapter's recorded model family {recorded!r} is not one of {', '.join(FAMILIES)}")
    return get_family(recorded or UNRECORDED)


def family_of_adapter(folder: str | Path):
    """The family the adapter folder was trained on."""
    from omnideft.adapters.folder import adapter_family

    return family_of_record(adapter_family(folder))


def check_family_name(name: str, what: str = "model.family") -> str:
    if name != AUTO and name not in FAMILIES:
        raise UserError(f"{what} {name!r} is not one of {', '.join((AUTO, *FAMILIES))}")
    return name


def family_of_folder(folder: str | Path):
    """The family whose layout a local folder has; one line naming the folder when none has it."""
    path = Path(folder)
    if not path.is_dir():
        raise UserError(f"{folder} is not a directory")
    found = [f for f in all_families() if f.owns_folder(path)]
    if not found:
        classes = ", ".join(c for f in all_families() for c in f.pipeline_classes)
        if (path / "model_index.json").is_file():  # owns_folder has read it: a JSON object
            named = json.loads((path / "model_index.json").read_text()).get("_class_name")
            raise UserError(f"{folder} is not a model folder of any family: model_index.json names {named!r}, not "
                            f"one of {classes}")
        layouts = "; ".join(f"{f.title}: {'/, '.join(f.subfolders)}/" for f in all_families() if f.subfolders)
        raise UserError(f"{folder} is not a model folder of any family: no model_index.json and not the "
                        f"subfolders of one ({layouts})")
    return max(found, key=lambda f: len(f.subfolders))  # the most specific layout (OmniGen2's has more parts)


def resolve_family(name: str, family: str = AUTO, recorded: str | None = None):
    """The family a model name means (`model.family` of a recipe, `--family` of a command). `auto`: a local folder
    says which; a preset takes `recorded` (the family the adapter in use was trained on) when given; a hub id the
    default family. A family named for a folder of another is one line naming both; so is a hub id for a family
    that loads none."""
    check_family_name(family)
    if family == AUTO and recorded in FAMILIES and is_preset(name, get_family(recorded)):
        family = recorded
    path = Path(name).expanduser()
    if not is_preset(name) and path.is_dir():
        found = family_of_folder(path)
        if family not in (AUTO, found.name):
            chosen = get_family(family)
            raise UserError(f"{name} is an {found.title} folder, but the family asked for is {chosen.title} "
                            f"({family}); drop model.family / --family or name an {chosen.title} folder")
        return found
    chosen = default_family() if family == AUTO else get_family(family)
    if not is_preset(name, chosen) and not chosen.hub_ids:
        raise UserError(f"model {name!r}: {chosen.title} loads from {', '.join(map(repr, chosen.presets))} or a "
                        f"local folder ({'/, '.join(chosen.subfolders)}/); not a hub id - download it first")
    return chosen


def family_of_components(components):
    """The family whose loaded components these are (validation renders on the trainer's model)."""
    return next(f for f in all_families() if f.owns_components(components))


def is_preset(name: str, family=None) -> bool:
    """A preset name of `family` (of any family when None); presets win over folders of the same name."""
    families = [family] if family is not None else all_families()
    return any(name in f.presets for f in families)
