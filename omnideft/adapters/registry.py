"""The adapter methods: name (the recipe's `adapter.method`) -> "module:class" of its AdapterMethod (method.py).

Adding a method is its own file plus one line here; the recipe's choices, injection, the optimizer, the base
fingerprint, the adapter folder, export, composition and the standard tests all ask this table. The classes are
imported on first use, so reading the names (the recipe does) needs neither torch nor PEFT.
"""

from __future__ import annotations

from functools import cache
from importlib import import_module
from typing import TYPE_CHECKING

from omnideft.errors import UserError

if TYPE_CHECKING:
    from omnideft.adapters.method import AdapterMethod

METHODS = {
    "lora": "omnideft.adapters.lora:LoRA",
    "deft": "omnideft.adapters.deft:DEFT",
    "para": "omnideft.adapters.para:PaRa",
    "soda": "omnideft.adapters.soda:SODA",
    "svdiff": "omnideft.adapters.svdiff:SVDiff",
    "oft": "omnideft.adapters.oft:OFT",
}


@cache
def get_method(name: str) -> AdapterMethod:
    """The method called `name` (one instance per name)."""
    if name not in METHODS:
        raise UserError(f"adapter.method {name!r} is not one of {sorted(METHODS)}")
    module, cls = METHODS[name].split(":")
    return getattr(import_module(module), cls)(name)


def all_methods() -> list[AdapterMethod]:
    return [get_method(name) for name in METHODS]
