"""A dataclass field that documents itself: its one default, a line of help and the allowed values.

The specs of the rooms (adapters.spec.AdapterSpec, camera.spec.CameraSpec) and the recipe's own sections declare
their options with it; the recipe validates values against `choices` and `omnideft train --help-recipe` prints
`help`.
"""

from __future__ import annotations

from dataclasses import field


def option(default, help: str, choices: tuple | None = None):
    metadata = {"help": help, "choices": choices}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=metadata)
    return field(default=default, metadata=metadata)
