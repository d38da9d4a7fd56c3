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
# A quantised base (model/quantize.py) has the same shape: optimum-quanto stores `weight._data` (the weight's shape)
# with `weight._scale` and activation scales, bitsandbytes `weight` plus its quantisation state.
QUANTIZATION_STATE = re.compile(r"\.(weight\._scale|input_scale|output_scale|weight\.(absmax|quant_map|nested_\w+|"
                                r"quant_state\.\w+))$")


@cache
def adapter_tensor() -> re.Pattern:
    """Matches the state-dict names of adapter tensors: a name part that starts with a method's prefix."""
    prefixes = [p for method in all_methods() for p in method.param_prefixes] + [CAMERA]
    return re.compile(r"(^|\.)(" + "|".join(map(re.escape, prefixes)) + ")")


def base_fingerprint(transformer: nn.Module) -> str:
    h = hashlib.sha256(type(base_model_of(transformer)).__name__.encode())
    entries = []
    for name, tensor in base_model_of(transformer).state_dict(keep_vars=True).items():
        if adapter_tensor().search(name) or QUANTIZATION_STATE.search(name):
            continue
        shape = getattr(tensor, "ds_shape", tensor.shape)  # ZeRO-3 partitions parameters to 0-element tensors
        if getattr(tensor, "quant_state", None) is not None:  # bitsandbytes packs 4-bit weights
            shape = tensor.quant_state.shape
        entries.append((name.replace(".base_layer.", ".").replace(".weight._data", ".weight"), tuple(shape)))
    for name, shape in sorted(entries):
        h.update(f"{name}:{shape};".encode())
    return "sha256:" + h.hexdigest()[:16]


def base_model_of(model: nn.Module) -> nn.Module:
    """The transformer inside a PeftModel / AdapterModel; a plain model is returned as is."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model
