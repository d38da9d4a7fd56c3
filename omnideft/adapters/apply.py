"""Inject an adapter described by an AdapterSpec into OmniGen's transformer (PEFT, or the method's own injection)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from omnideft.adapters.registry import METHODS
from omnideft.errors import UserError
from omnideft.model.targets import target_module_names

INITS = ("identity", "paper")


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
    soda_variant: str = "svd"
    soda_rotation: str = "stiefel"


def apply_adapter(transformer: nn.Module, spec: AdapterSpec, adapter_name: str = "default") -> nn.Module:
    """Returns a PeftModel (lora, deft, para) or an AdapterModel (soda, svdiff); both expose get_base_model()."""
    if spec.method not in METHODS:
        raise UserError(f"adapter.method {spec.method!r} is not one of {sorted(METHODS)}")
    if spec.init not in INITS:
        raise UserError(f"adapter.init {spec.init!r} is not one of {list(INITS)}")
    targets = target_module_names(transformer, spec.targets, spec.include_embedders)
    if not targets:
        raise UserError(f"adapter.targets {spec.targets!r} matches no nn.Linear of the transformer")
    method = METHODS[spec.method]
    if hasattr(method, "inject"):
        model = method.inject(transformer, spec, targets, adapter_name)
    else:
        from peft import get_peft_model

        model = get_peft_model(transformer, method.build_config(spec, targets), adapter_name=adapter_name)
        if hasattr(method, "after_inject"):
            method.after_inject(model, spec, adapter_name)
    model.omnideft_spec = spec  # save_adapter writes omnideft's own config for methods PEFT cannot describe
    return model


def param_groups(model: nn.Module, spec: AdapterSpec, lr: float, weight_decay: float = 0.0) -> list[dict]:
    """Optimizer groups named by the method: DEFT's P at p_lr_ratio x lr (the authors' 0.1x), SODA's rotation
    factors apart from its spectrum (see optim.build_optimizer), everything else at lr."""
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
