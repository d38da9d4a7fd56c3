"""A shape fingerprint of the base transformer: adapters refuse to load onto a model of another shape.

Adapter wrappers are ignored (`.base_layer` dropped, the tensors of every registered method - their
param_prefixes - and the camera encoder skipped) so a model gives the same fingerprint with or without adapters
injected.
"""

from __future__ import annotations

import hashlib
import re
from functools import cache

from torch import nn

from omnideft.adapters.registry import all_methods

CAMERA = "camera_conditioning."  # the camera conditioning submodule (camera/conditioning.py) rides with adapters


@cache
def adapter_tensor() -> re.Pattern:
    """Matches the state-dict names of adapter tensors: a name part that starts with a method's prefix."""
    prefixes = [p for method in all_methods() for p in method.param_prefixes] + [CAMERA]
    return re.compile(r"(^|\.)(" + "|".join(map(re.escape, prefixes)) + ")")


def base_fingerprint(transformer: nn.Module) -> str:
    h = hashlib.sha256(type(base_model_of(transformer)).__name__.encode())
    entries = []
    for name, tensor in base_model_of(transformer).state_dict(keep_vars=True).items():
        if adapter_tensor().search(name):
            continue
        shape = getattr(tensor, "ds_shape", tensor.shape)  # ZeRO-3 partitions parameters to 0-element tensors
        entries.append((name.replace(".base_layer.", "."), tuple(shape)))
    for name, shape in sorted(entries):
        h.update(f"{name}:{shape};".encode())
    return "sha256:" + h.hexdigest()[:16]


FAMILY_LABELS = {"omnigen": "OmniGen (v1)", "omnigen2": "OmniGen2"}


def base_family(transformer: nn.Module) -> str:
    """`omnigen2` for omnideft's OmniGen2 transformer, else `omnigen` (v1). By class name: adapters sit below the
    model room and do not import it."""
    return "omnigen2" if type(base_model_of(transformer)).__name__ == "OmniGen2Transformer" else "omnigen"


def base_model_of(model: nn.Module) -> nn.Module:
    """The transformer inside a PeftModel / AdapterModel; a plain model is returned as is."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model
