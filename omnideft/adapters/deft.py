"""DEFT: W' = (I - P_proj) W + Q_P R with P_proj = Q_P right^T built from P (out x r) by a projector.

Injection through PEFT's DEFT tuner (`deft_P`, `deft_R`); the layers are then swapped for FastDeftLinear (fused
forward, every projector of projectors.py). `relu` and `qr` stay exactly PEFT's files; other projectors save the
same tensors with omnideft's own adapter_config.json. `init: identity` sets R = right^T W / s so the adapted model
equals the base at step 0; `init: paper` keeps a random R as the authors ran it. P and R sit in separate optimizer
groups (P at p_lr_ratio x lr, 0.1 by default). Exported exactly as LoRA: B = Q_P, A = s R - right^T W.
"""

from __future__ import annotations

import torch
from peft import DeftConfig, PeftModel
from peft.tuners.deft.layer import DeftLinear

from omnideft.adapters.fast_deft import FastDeftLinear, use_fast_layers
from omnideft.adapters.method import PeftMethod, active_adapter
from omnideft.adapters.spec import PEFT_PROJECTORS, PROJECTORS
from omnideft.errors import UserError


class DEFT(PeftMethod):
    param_prefixes = ("deft_",)
    para = False  # PaRa (para.py) is DEFT's rank-reduction mode: no R, only P trains
    default_projector = "relu"

    def projector(self, spec) -> str:
        projector = spec.projector or self.default_projector
        if projector not in PROJECTORS:
            raise UserError(f"adapter.projector {projector!r} is not one of {list(PROJECTORS)}")
        return projector

    def peft_config(self, spec, targets: list[str]) -> DeftConfig:
        projector = self.projector(spec)
        return DeftConfig(
            r=spec.rank,
            # PEFT validates the name; other projectors are set on the layers after injection (after_inject)
            decomposition_method=projector if projector in PEFT_PROJECTORS else "relu",
            alpha=spec.alpha,
            para=self.para,
            deft_dropout=spec.dropout,
            init_weights=spec.init == "identity",
            target_modules=targets,
        )

    def after_inject(self, model: PeftModel, spec, adapter_name: str) -> None:
        projector = self.projector(spec)
        use_fast_layers(model)
        if projector in PEFT_PROJECTORS:
            return
        for module in model.modules():
            if hasattr(module, "deft_decomposition") and adapter_name in module.deft_decomposition:
                module.deft_decomposition[adapter_name] = projector
                if spec.init == "identity" and not self.para:  # R = right^T W / s for this projector
                    with torch.no_grad():
                        module.reset_deft_parameters(adapter_name, init_weights=True)

    def after_peft_load(self, model) -> None:
        use_fast_layers(model)

    def before_zero3(self, model) -> None:
        """PEFT's DeftLinear forward (the path taken under ZeRO-3) calls its base layer, then reads
        `base_layer.bias` to form the bias-free base product; ZeRO-3 releases a module's parameters when its own
        forward returns, so that read found a 0-element tensor. And `deft_P` / `deft_R` sit in ParameterDicts
        (submodules whose forward never runs): inside the engine's forward DeepSpeed's prefetch found them, but on
        an MLLM prompt encoder run before the engine's forward (adapter.mllm_targets), they stayed partitioned. All
        three are registered as external parameters of the DEFT layer, so DeepSpeed gathers them for its whole
        forward (measured on a tiny model with an MLLM prompt encoder, transformer and MLLM)."""
        import deepspeed  # optional extra, present when ZeRO-3 runs

        for module in model.modules():
            if isinstance(module, DeftLinear):
                for p in [module.get_base_layer().bias, *module.deft_P.values(), *module.deft_R.values()]:
                    if p is not None:
                        deepspeed.zero.register_external_parameter(module, p)

    def peft_native(self, spec) -> bool:
        return self.projector(spec) in PEFT_PROJECTORS

    def trainable_group(self, param_name: str) -> str:
        return "P" if "deft_P" in param_name else "R"

    def lr_ratio(self, group: str, spec) -> float:
        return spec.p_lr_ratio if group == "P" else 1.0

    def owns(self, layer) -> bool:
        return isinstance(layer, FastDeftLinear) and any(
            layer.deft_para[a] == self.para for a in layer.active_adapters if a in layer.deft_P)

    def layer_delta(self, layer):
        return layer.lora_factors(active_adapter(layer, layer.deft_P))
