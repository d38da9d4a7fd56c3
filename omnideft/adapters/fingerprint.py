"""Fingerprints of the base transformer: adapters refuse to load onto a model of another shape
(`base_fingerprint`, a hash of names and shapes) or with other weights (`weights_fingerprint`, a few numbers
summarising the values, compared with a tolerance so that the same base loaded in bf16 or fp16 still matches).

Adapter wrappers are ignored (`.base_layer` dropped, the tensors of every registered method - their
param_prefixes - and the camera encoder skipped) so a model gives the same fingerprint with or without adapters
injected.
"""

from __future__ import annotations

import hashlib
import math
import re
from functools import cache

import torch
from torch import nn

from omnideft.adapters.registry import all_methods

CAMERA = "camera_conditioning."  # the camera conditioning submodule (camera/conditioning.py) rides with adapters
MLLM = "mllm_adapter."  # an adapted MLLM prompt encoder rides with the transformer while it trains
# A quantised base (model/quantize.py) has the same shape: optimum-quanto stores `weight._data` (the weight's shape)
# with `weight._scale` and activation scales, bitsandbytes `weight` plus its quantisation state.
QUANTIZATION_STATE = re.compile(r"\.(weight\._scale|input_scale|output_scale|weight\.(absmax|quant_map|nested_\w+|"
                                r"quant_state\.\w+))$")


@cache
def adapter_tensor() -> re.Pattern:
    """Matches the state-dict names of adapter tensors: a name part that starts with a method's prefix."""
    prefixes = [p for method in all_methods() for p in method.param_prefixes] + [CAMERA, MLLM]
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


WEIGHT_BUCKETS = 16  # numbers in a weights fingerprint: tensor i (sorted by name) adds to bucket i % 16
WEIGHT_SAMPLES = 256  # evenly spaced values read per tensor: the cost stays flat on a 4B-parameter base
# Relative difference allowed per bucket. Measured on the tiny base: loaded in bf16 it moves a bucket by 2.9e-4, in
# fp16 by 4.6e-5 (rounding errors average out over the samples); every weight scaled by 1.01 moves one by 9.9e-3,
# another random init by 1.0e-1 (tests/faults/test_adapter_faults.py).
WEIGHT_TOLERANCE = 2e-3


# Camera conditioning grows the token table and writes its token's row (camera/conditioning.py) before the
# adapter loads: the table's values are left out of the weights fingerprint (its shape stays in base_fingerprint).
CAMERA_WRITES = "embed_tokens."


def _base_tensors(transformer: nn.Module) -> list[tuple[str, torch.Tensor]]:
    entries = [(name.replace(".base_layer.", "."), tensor)
               for name, tensor in base_model_of(transformer).state_dict(keep_vars=True).items()
               if not adapter_tensor().search(name) and CAMERA_WRITES not in name]
    return sorted(entries, key=lambda e: e[0])


def weights_fingerprint(transformer: nn.Module) -> list[float] | None:
    """Mean absolute value of WEIGHT_SAMPLES evenly spaced values of every base tensor, summed into WEIGHT_BUCKETS
    buckets; None when the values are not on this process (ZeRO-3 partitions them to 0-element tensors)."""
    buckets = [0.0] * WEIGHT_BUCKETS
    with torch.no_grad():
        for i, (_, tensor) in enumerate(_base_tensors(transformer)):
            flat = tensor.detach().reshape(-1)
            if flat.numel() == 0 or flat.device.type == "meta":
                return None
            index = torch.linspace(0, flat.numel() - 1, min(WEIGHT_SAMPLES, flat.numel())).long().to(flat.device)
            buckets[i % WEIGHT_BUCKETS] += float(flat[index].float().abs().mean())
    return [float(f"{b:.7g}") for b in buckets]


def weights_differ(recorded: list | None, have: list | None) -> int | None:
    """The first bucket where two weights fingerprints differ beyond WEIGHT_TOLERANCE; None when they match or
    either is unknown (an adapter saved before the fingerprint existed, a partitioned base)."""
    if not recorded or not have or len(recorded) != len(have):
        return None
    for i, (a, b) in enumerate(zip(recorded, have)):
        if not (math.isfinite(a) and math.isfinite(b)) or abs(a - b) > WEIGHT_TOLERANCE * max(abs(a), abs(b), 1e-12):
            return i
    return None
