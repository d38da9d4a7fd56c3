"""Which linears of a transformer an adapter goes on: the part every family shares. A family's own presets
(`attn`, `all-linear`, what `include_embedders` adds) are its `target_modules` (families/<name>/targets.py); the
caller that knows the family passes them to apply_adapter as a TargetRule."""

from __future__ import annotations

from typing import Callable

from torch import nn

from omnideft.errors import UserError

TARGET_PRESETS = ("attn", "all-linear")
# (transformer, adapter.targets: a preset name or a list of module names/suffixes, include_embedders) -> names
TargetRule = Callable[[nn.Module, "str | list[str]", bool], list[str]]


def linear_names(transformer: nn.Module) -> list[str]:
    return [name for name, mod in transformer.named_modules() if isinstance(mod, nn.Linear)]


def listed_targets(transformer: nn.Module, names: list[str]) -> list[str]:
    """The linears named by a list of full module names or name suffixes (`to_q` means every `*.to_q`)."""
    return [n for n in linear_names(transformer) if any(n == s or n.endswith("." + s) for s in names)]


def preset_targets(transformer: nn.Module, preset: str | list[str], include_embedders: bool, *,
                   attn: Callable[[str], object], all_linear: Callable[[str], object],
                   embedders: Callable[[str], object]) -> list[str]:
    """A family's TargetRule, from what each preset means on its module names (families/<name>/targets.py):
    `attn` and `all-linear` pick the linears their test accepts, `include_embedders` adds those `embedders` accepts;
    a list names modules."""
    linears = linear_names(transformer)
    if isinstance(preset, list):
        chosen = listed_targets(transformer, preset)
    elif preset in ("attn", "all-linear"):
        accepts = attn if preset == "attn" else all_linear
        chosen = [n for n in linears if accepts(n)]
    else:
        raise UserError(f"adapter.targets {preset!r} is not a preset {TARGET_PRESETS} or a list of module names")
    if include_embedders:
        chosen += [n for n in linears if embedders(n) and n not in chosen]
    return chosen


def listed_only(transformer: nn.Module, preset: str | list[str], include_embedders: bool = False) -> list[str]:
    """The TargetRule that knows no family: a list of names only (an adapter folder's own target_modules)."""
    if not isinstance(preset, list):
        raise UserError(f"adapter.targets {preset!r}: presets {TARGET_PRESETS} are the model family's; name the "
                        "modules as a list")
    return listed_targets(transformer, preset)
