"""Several adapters at once: `PATH[:weight]` arguments, merged into the base as W + sum_i w_i delta_i.

Each adapter's delta is taken on the untouched base through its method's exact form (LoRA factors or a dense delta:
export.adapter_deltas, which stops on a layer without one), so the composition is exact and inference afterwards
runs the plain transformer: zero overhead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from torch import nn

from omnideft.adapters.export import adapter_deltas, merge_deltas, unload
from omnideft.adapters.folder import load_adapter
from omnideft.errors import UserError


def parse_adapter_arg(text: str) -> tuple[str, float]:
    """'runs/a/adapter:0.7' -> ('runs/a/adapter', 0.7); no ':weight' (or a path containing ':') -> weight 1."""
    path, sep, tail = text.rpartition(":")
    if sep and path:
        try:
            return path, float(tail)
        except ValueError:
            if not Path(text).exists() and Path(path).exists():
                raise UserError(f"--adapter {text!r}: weight {tail!r} is not a number") from None
    return text, 1.0


def weighted_deltas(transformer: nn.Module, adapters: list[tuple[str, float]],
                    load: Callable = load_adapter) -> tuple[nn.Module, list]:
    """[(weight, {module name: delta})] of every (folder, weight) as `load(module, folder)` puts it on the module
    (default: load_adapter; a family passes its own checks, or the loader of another part, e.g. an MLLM prompt encoder),
    each taken on the untouched `transformer`; returns the plain module (adapters loaded and unloaded again) and the
    list, for merge_deltas."""
    weighted = []
    for folder, weight in adapters:
        model = load(transformer, folder)
        weighted.append((weight, adapter_deltas(model)))
        transformer = unload(model)
    return transformer, weighted


def merge_adapters(transformer: nn.Module, adapters: list[tuple[str, float]]) -> nn.Module:
    """Fold every (folder, weight) into `transformer`'s weights in place; returns the plain transformer."""
    transformer, weighted = weighted_deltas(transformer, adapters)
    merge_deltas(transformer, weighted)
    return transformer
