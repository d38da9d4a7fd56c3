"""Inject the adapter an AdapterSpec describes into a transformer, and its optimizer groups; both ask the method
(registry.get_method). Which linears `adapter.targets` means is the model family's rule (family.target_modules),
passed in by the caller that knows the family."""

from __future__ import annotations

from torch import nn

from omnideft.adapters.registry import get_method
from omnideft.adapters.spec import INITS, AdapterSpec
from omnideft.adapters.targets import TargetRule, listed_only
from omnideft.errors import UserError


def apply_adapter(transformer: nn.Module, spec: AdapterSpec, adapter_name: str = "default",
                  targets: TargetRule = listed_only) -> nn.Module:
    """Returns a PeftModel (PEFT-injected methods) or an AdapterModel (own injection); both expose
    get_base_model(). `targets`: the family's rule for `spec.targets` (family.target_modules); without it only a list
    of module names is understood."""
    method = get_method(spec.method)
    if spec.init not in INITS:
        raise UserError(f"adapter.init {spec.init!r} is not one of {list(INITS)}")
    names = targets(transformer, spec.targets, spec.include_embedders)
    if not names:
        raise UserError(f"adapter.targets {spec.targets!r} matches no nn.Linear of the transformer")
    model = method.inject(transformer, spec, names, adapter_name)
    model.omnideft_spec = spec  # save_adapter writes omnideft's own config for methods PEFT cannot describe
    return model


def param_groups(model: nn.Module, spec: AdapterSpec, lr: float, weight_decay: float = 0.0) -> list[dict]:
    """Optimizer groups named by the method (DEFT: P at p_lr_ratio x lr, R; SODA: rotation, spectrum), each at the
    method's lr_ratio x lr."""
    method = get_method(spec.method)
    groups: dict[str, list] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            groups.setdefault(method.trainable_group(name), []).append(p)
    return [{"params": params, "lr": lr * method.lr_ratio(g, spec), "weight_decay": weight_decay, "name": g}
            for g, params in sorted(groups.items())]
