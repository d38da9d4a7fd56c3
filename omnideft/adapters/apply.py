"""Inject the adapter an AdapterSpec describes into OmniGen's transformer, and its optimizer groups; both ask the
method (registry.get_method)."""

from __future__ import annotations

from torch import nn

from omnideft.adapters.registry import get_method
from omnideft.adapters.spec import INITS, AdapterSpec
from omnideft.errors import UserError
from omnideft.model.targets import target_module_names


def apply_adapter(transformer: nn.Module, spec: AdapterSpec, adapter_name: str = "default") -> nn.Module:
    """Returns a PeftModel (PEFT-injected methods) or an AdapterModel (own injection); both expose
    get_base_model()."""
    method = get_method(spec.method)
    if spec.init not in INITS:
        raise UserError(f"adapter.init {spec.init!r} is not one of {list(INITS)}")
    targets = target_module_names(transformer, spec.targets, spec.include_embedders)
    if not targets:
        raise UserError(f"adapter.targets {spec.targets!r} matches no nn.Linear of the transformer")
    model = method.inject(transformer, spec, targets, adapter_name)
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
