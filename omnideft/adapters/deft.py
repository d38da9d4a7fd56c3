"""DEFT: W' = (I - P_proj) W + Q_P R with P_proj = Q_P right^T built from P (out x r) by a projector.

Injection through PEFT's DEFT tuner (`deft_P`, `deft_R`); the layers are then swapped for FastDeftLinear (fused
forward, every projector of projectors.py). `relu` and `qr` stay exactly PEFT's files; other projectors save the
same tensors with omnideft's own adapter_config.json. `init: identity` sets R = right^T W / s so the adapted model
equals the base at step 0; `init: paper` keeps a random R as the authors ran it. P and R sit in separate optimizer
groups (P at p_lr_ratio x lr, 0.1 by default).
"""

from __future__ import annotations

import torch
from peft import DeftConfig, PeftModel

from omnideft.adapters.fast_deft import use_fast_layers
from omnideft.adapters.projectors import PEFT_PROJECTORS, PROJECTORS
from omnideft.errors import UserError


def projector_of(spec, para: bool = False) -> str:
    projector = spec.projector or ("qr" if para else "relu")
    if projector not in PROJECTORS:
        raise UserError(f"adapter.projector {projector!r} is not one of {list(PROJECTORS)}")
    return projector


def peft_native(spec) -> bool:
    return projector_of(spec, spec.method == "para") in PEFT_PROJECTORS


def build_config(spec, target_modules: list[str], para: bool = False) -> DeftConfig:
    projector = projector_of(spec, para)
    return DeftConfig(
        r=spec.rank,
        # PEFT validates the name; other projectors are set on the layers after injection (after_inject)
        decomposition_method=projector if projector in PEFT_PROJECTORS else "relu",
        alpha=spec.alpha,
        para=para,
        deft_dropout=spec.dropout,
        init_weights=spec.init == "identity",
        target_modules=target_modules,
    )


def after_inject(model: PeftModel, spec, adapter_name: str, para: bool = False) -> None:
    projector = projector_of(spec, para)
    use_fast_layers(model)
    if projector in PEFT_PROJECTORS:
        return
    for module in model.modules():
        if hasattr(module, "deft_decomposition") and adapter_name in module.deft_decomposition:
            module.deft_decomposition[adapter_name] = projector
            if spec.init == "identity" and not para:  # R = right^T W / s for this projector
                with torch.no_grad():
                    module.reset_deft_parameters(adapter_name, init_weights=True)


def trainable_groups(name: str) -> str:
    return "P" if "deft_P" in name else "R"
