"""Adapters: the method interface (method.py) and one file per method, named in registry.py; the spec (spec.py),
injection (targets.py: the list matching every family shares; each family's presets are its own), the fused DEFT
layer, the contract-2 folder, the optimizer, LoRA export and composition.

Importing the package is light (no torch, no PEFT) so the recipe can read AdapterSpec; the names below are imported
from their modules on first use.
"""

from importlib import import_module

_HOME = {
    "AdapterSpec": "spec",
    "METHODS": "registry",
    "apply_adapter": "apply",
    "param_groups": "apply",
    "load_adapter": "folder",
    "save_adapter": "folder",
    "read_adapter_meta": "folder",
    "read_extra_tensors": "folder",
    "base_fingerprint": "fingerprint",
    "build_optimizer": "optim",
    "requires_plain_optimizer": "optim",
}
__all__ = list(_HOME)


def __getattr__(name: str):
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{_HOME[name]}"), name)
