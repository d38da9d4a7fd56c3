"""Self-documenting options: a dataclass field carries its one default, a line of help and the allowed values;
recipe files (YAML) and `section.key=value` overrides are read into a dataclass of such sections, with every key and
type checked before anything runs.

The specs of the rooms (adapters.spec.AdapterSpec, camera.spec.CameraSpec) and the recipes' own sections
(train/recipe.py, pretrain/recipe.py) declare their options with `option`; `load_sections` reads a recipe into them
and `options_help` prints them (`--help-recipe`).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import re
import types
import typing
from dataclasses import field
from pathlib import Path
from typing import Callable

import yaml

from omnideft.errors import UserError


def option(default, help: str, choices: tuple | Callable[[], tuple] | None = None, bounds: str | None = None,
           multiple: int | None = None):
    """`choices`: the allowed values, or a function giving them when a recipe is checked (a registry that grows,
    e.g. model families); `bounds`: the allowed interval of a number, or of every number of a list: ">= 1", "> 0",
    "[0, 1)", "(0, 1)"; `multiple`: the number must be a multiple of it. Floats must be finite in every case."""
    if bounds is not None:
        _interval(bounds)  # a malformed bound fails at import, not when a user hits it
    metadata = {"help": help, "choices": choices, "bounds": bounds, "multiple": multiple}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=metadata)
    return field(default=default, metadata=metadata)


def load_sections(path: str | Path | None, overrides, schema: type, prepare: Callable | None = None):
    """Read the YAML at `path` (None: defaults only), let `prepare(raw, recipe_folder)` adjust it, apply the
    overrides, and build `schema`."""
    raw: dict = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise UserError(f"recipe {p} not found")
        try:
            raw = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except UnicodeDecodeError as exc:
            raise UserError(f"recipe {p} is not UTF-8 text (byte {exc.start}: {exc.reason})") from None
        except yaml.YAMLError as exc:
            raise UserError(f"recipe {p} is not valid YAML: {str(exc).splitlines()[0]}") from None
        if not isinstance(raw, dict):
            raise UserError(f"recipe {p} must be a mapping of sections")
        if prepare is not None:
            prepare(raw, p.parent.resolve())
    for item in overrides:
        apply_override(raw, item, schema)
    return build_sections(raw, schema)


def apply_override(raw: dict, item: str, schema: type | None = None) -> None:
    """`section.key=value` (value parsed as YAML) into the raw mapping. With `schema`, one string given to a list
    key is a one-element list (`data.shards=out/train` as `data.shards=[out/train]`)."""
    if "=" not in item:
        raise UserError(f"override {item!r} must look like key.sub=value")
    key, value = item.split("=", 1)
    parts = key.strip().split(".")
    if len(parts) != 2:
        raise UserError(f"override key {key!r} must be section.key (e.g. train.lr)")
    try:
        parsed = yaml.safe_load(value) if value != "" else None
    except yaml.YAMLError:
        parsed = value
    raw.setdefault(parts[0], {})
    if not isinstance(raw[parts[0]], dict):
        raise UserError(f"recipe section {parts[0]!r} must be a mapping")
    if isinstance(parsed, str) and schema is not None and _hint(schema, *parts) is list:
        parsed = [parsed]
    raw[parts[0]][parts[1]] = parsed


def _hint(schema: type, section: str, key: str):
    """The declared type of `section.key` in `schema`, or None when there is no such key."""
    sec_type = typing.get_type_hints(schema).get(section)
    return typing.get_type_hints(sec_type).get(key) if dataclasses.is_dataclass(sec_type) else None


def build_sections(raw: dict, schema: type):
    """A mapping of sections -> `schema` (a dataclass of section dataclasses); names the first bad key."""
    sections = {f.name: f.type for f in dataclasses.fields(schema)}
    hints = typing.get_type_hints(schema)
    out = {}
    for sec, body in raw.items():
        if sec not in sections:
            raise UserError(f"unknown recipe section {sec!r}; allowed: {', '.join(sections)}")
        if body is None:
            body = {}
        if not isinstance(body, dict):
            raise UserError(f"recipe section {sec!r} must be a mapping")
        cls = hints[sec]
        fields = {f.name: f for f in dataclasses.fields(cls)}
        sec_hints = typing.get_type_hints(cls)
        values = {}
        for key, value in body.items():
            if key not in fields:
                raise UserError(f"unknown recipe key {sec}.{key}; allowed in {sec}: {', '.join(fields)}")
            meta = fields[key].metadata
            values[key] = check_type(f"{sec}.{key}", value, sec_hints[key], allowed(meta.get("choices")))
            check_value(f"recipe key {sec}.{key}", values[key], meta.get("bounds"), meta.get("multiple"))
        out[sec] = cls(**values)
    return schema(**out)


def allowed(choices: tuple | Callable[[], tuple] | None) -> tuple | None:
    return choices() if callable(choices) else choices


def check_type(name: str, value, hint, choices):
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    allowed = args if origin in (typing.Union, types.UnionType) else (hint,)
    if value is None:
        if type(None) in allowed:
            return None
        raise UserError(f"recipe key {name} must not be null")
    if float in allowed and isinstance(value, str):
        try:  # YAML 1.1 reads 1e-3 (no dot) as a string
            value = float(value)
        except ValueError:
            pass
    for t in allowed:
        if t is type(None):
            continue
        if t is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            value = float(value)
            break
        if t is int and isinstance(value, int) and not isinstance(value, bool):
            break
        if t in (str, bool, list, dict) and isinstance(value, t):
            break
    else:
        names = " or ".join("null" if t is type(None) else t.__name__ for t in allowed)
        raise UserError(f"recipe key {name} must be {names}, got {type(value).__name__} {value!r}")
    if choices and value not in choices:
        raise UserError(f"recipe key {name} is {value!r}; allowed: {', '.join(map(str, choices))}")
    return value


_BOUND = re.compile(r"^\s*(>=|>|<=|<)\s*(\S+)\s*$")
_RANGE = re.compile(r"^\s*([\[(])\s*([^,]+),\s*([^\])]+)([\])])\s*$")


def _interval(bounds: str) -> tuple[float, float, bool, bool]:
    """(low, high, low included, high included) of a bounds text."""
    if m := _BOUND.match(bounds):
        op, x = m.group(1), _number(m.group(2))
        return {">=": (x, math.inf, True, False), ">": (x, math.inf, False, False),
                "<=": (-math.inf, x, False, True), "<": (-math.inf, x, False, False)}[op]
    if m := _RANGE.match(bounds):
        return _number(m.group(2)), _number(m.group(3)), m.group(1) == "[", m.group(4) == "]"
    raise ValueError(f"bounds {bounds!r}: expected '>= x', '> x', '<= x', '< x' or an interval like '[0, 1)'")


def _number(text: str) -> int | float:
    """A bound as written: an integer stays exact (2**64 - 1 as a float would admit 2**64)."""
    try:
        return int(text)
    except ValueError:
        return float(text)


def check_value(name: str, value, bounds: str | None, multiple: int | None = None) -> None:
    """Numbers (and the numbers of a list) within `bounds`, a multiple of `multiple`, and finite: the message
    names the value (`name`: "recipe key train.lr", "--steps") and the allowed range."""
    numbers = value if isinstance(value, list) else [value]
    for x in numbers:
        if isinstance(x, bool) or not isinstance(x, (int, float)):
            if bounds and isinstance(value, list):
                raise UserError(f"{name} must hold numbers {bounds}, got {x!r}")
            continue
        if isinstance(x, float) and not math.isfinite(x):  # ints are finite (and may be too big for a float)
            rule = f" {bounds}" if bounds else ""
            raise UserError(f"{name} is {x!r}; it must be a finite number{rule}")
        if bounds:
            low, high, low_in, high_in = _interval(bounds)
            if not ((x > low or (low_in and x == low)) and (x < high or (high_in and x == high))):
                raise UserError(f"{name} is {x!r}; allowed: {bounds}")
        if multiple and x % multiple:
            raise UserError(f"{name} is {x!r}; allowed: a multiple of {multiple}" +
                            (f", {bounds}" if bounds else ""))


def bounded(kind: type, bounds: str, multiple: int | None = None) -> Callable[[str], int | float]:
    """An argparse `type=` for a number option: parsed as `kind`, then held to `bounds` like a recipe key."""
    _interval(bounds)

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") \
                from None
        try:
            check_value(repr(text), value, bounds, multiple)
        except UserError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        return value

    return parse


def options_help(schema: type) -> str:
    """Every key of `schema` with its default, help and allowed values (`--help-recipe`)."""
    lines = []
    hints = typing.get_type_hints(schema)
    for sec in dataclasses.fields(schema):
        lines.append(f"{sec.name}:")
        for f in dataclasses.fields(hints[sec.name]):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            choices, bounds, multiple = (f.metadata.get(k) for k in ("choices", "bounds", "multiple"))
            choices = allowed(choices)
            extra = f" ({'|'.join(choices)})" if choices else ""
            if bounds or multiple:
                extra += " (" + ", ".join(filter(None, [bounds, multiple and f"multiple of {multiple}"])) + ")"
            lines.append(f"  {f.name}: {default!r}  # {f.metadata['help']}{extra}")
    return "\n".join(lines)
