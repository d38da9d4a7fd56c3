"""Inject an adapter described by an AdapterSpec into OmniGen's transformer with PEFT."""

from __future__ import annotations

from dataclasses import dataclass

from peft import PeftModel, get_peft_model
from torch import nn

from omnideft.adapters.registry import METHODS
from omnideft.errors import UserError
from omnideft.model.targets import target_module_names


@dataclass
class AdapterSpec:
    method: str = "deft"
    rank: int = 32
    targets: str | list = "all-linear"
    include_embedders: bool = False
    projector: str | None = None
    alpha: float | None = None
    dropout: float = 0.0
    init: str = "identity"
    p_lr_ratio: float = 0.1


def apply_adapter(transformer: nn.Module, spec: AdapterSpec, adapter_name: str = "default") -> PeftModel:
    if spec.method not in METHODS:
        raise UserError(f"adapter.method {spec.method!r} is not one of {sorted(METHODS)}")
    if spec.init not in ("identity", "paper"):
        raise UserError(f"adapter.init {spec.init!r} is not one of ['identity', 'paper']")
    targets = target_module_names(transformer, spec.targets, spec.include_embedders)
    if not targets:
        raise UserError(f"adapter.targets {spec.targets!r} matches no nn.Linear of the transformer")
    config = METHODS[spec.method].build_config(spec, targets)
    return get_peft_model(transformer, config, adapter_name=adapter_name)


def param_groups(model: nn.Module, spec: AdapterSpec, lr: float, weight_decay: float = 0.0) -> list[dict]:
    """AdamW groups: DEFT's P at p_lr_ratio x lr (the authors' 0.1x), everything else at lr."""
    groups: dict[str, list] = {}
    kind = METHODS[spec.method].trainable_groups
    for name, p in model.named_parameters():
        if p.requires_grad:
            groups.setdefault(kind(name), []).append(p)
    out = []
    for g, params in sorted(groups.items()):
        ratio = spec.p_lr_ratio if (g == "P" and spec.method != "para") else 1.0
        out.append({"params": params, "lr": lr * ratio, "weight_decay": weight_decay, "name": g})
    return out
