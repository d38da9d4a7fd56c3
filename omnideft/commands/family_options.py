"""Settings only one model family's generator takes (`ModelFamily.generate_options`, e.g. a `--scheduler`):
the generate command has a `--<flag>` for every option of every registered family, its help naming the family, and
refuses in one line a flag of another family than the model's. A family adds a flag by declaring it; nothing here
names one."""

from __future__ import annotations

from omnideft.errors import UserError
from omnideft.families.family import FamilyOption, ModelFamily
from omnideft.families.registry import all_families


def add_family_options(parser) -> None:
    """`--<flag>` for each family option: dest is its `name` (the Generator keyword and GenerateRequest field), default
    None, so a flag left unset leaves the family's own default in place."""
    for option, families in _options().values():
        owners = ", ".join(f.title for f in families)
        parser.add_argument(f"--{option.flag}", dest=option.name, default=None, type=option.type,
                            choices=option.choices, nargs=option.nargs, metavar=option.metavar,
                            help=f"{owners} only: {option.help} (default {_shown(option.default)})".replace("%", "%%"))


def family_settings(args) -> dict:
    """{name: value} of the family options given on the command line (several values as a tuple); the unset ones are
    absent."""
    settings = {}
    for name in _options():
        value = getattr(args, name, None)
        if value is not None:
            settings[name] = tuple(value) if isinstance(value, list) else value
    return settings


def check_family_settings(settings: dict, family: ModelFamily, model: str) -> None:
    """One line for a given setting that `family` (the family of `model`) does not take, naming the flag and the
    families that do."""
    options = _options()
    for name in settings:
        if name not in {o.name for o in family.generate_options}:
            option, owners = options[name]
            raise UserError(f"--{option.flag} is for {', '.join(f.title for f in owners)} models only; the model "
                            f"{model} is {family.title}")


def _options() -> dict[str, tuple[FamilyOption, list[ModelFamily]]]:
    """Option name -> (its declaration, the families that take it), in registry order; an option several families
    declare is one flag, parsed as the first declares it."""
    table: dict[str, tuple[FamilyOption, list[ModelFamily]]] = {}
    for family in all_families():
        for option in family.generate_options:
            table.setdefault(option.name, (option, []))[1].append(family)
    return table


def _shown(value) -> str:
    """A default as the user types it: 0 1 for (0.0, 1.0)."""
    if isinstance(value, (tuple, list)):
        return " ".join(map(_shown, value))
    return f"{value:g}" if isinstance(value, float) else str(value)


def model_choices() -> str:
    """What a `--model` / `--base` may be, for help texts: the registered families' presets, folders and hub ids."""
    families = all_families()
    presets = list(dict.fromkeys(p for f in families for p in f.presets))
    hub = [f.title for f in families if f.hub_ids]
    return (f"a preset ({', '.join(presets)}), a saved model folder ({', '.join(f.title for f in families)})"
            + (f" or a hub id ({', '.join(hub)})" if hub else ""))



def format_choices() -> str:
    """The `omnideft export --format`s of each registered family, for help texts."""
    return "; ".join(f"{f.title}: {' | '.join(f.export_formats)}" for f in all_families())
