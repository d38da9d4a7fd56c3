"""LoRA through PEFT: W' = W + (alpha/r) B A, B = 0 at init; exported as B alpha/r and A."""

from __future__ import annotations

from peft import LoraConfig
from peft.tuners.lora import LoraLayer

from omnideft.adapters.method import PeftMethod, active_adapter
from omnideft.errors import UserError


class LoRA(PeftMethod):
    title = "LoRA"
    param_prefixes = ("lora_",)

    def peft_config(self, spec, targets: list[str]) -> LoraConfig:
        return LoraConfig(
            r=spec.rank,
            lora_alpha=spec.alpha if spec.alpha is not None else spec.rank,
            lora_dropout=spec.dropout,
            target_modules=targets,
            init_lora_weights=True if spec.init == "identity" else "gaussian",
        )

    def trainable_group(self, param_name: str) -> str:
        return "lora"

    def owns(self, layer) -> bool:
        return isinstance(layer, LoraLayer)

    def layer_delta(self, layer):
        adapter = active_adapter(layer, layer.lora_A)
        for what, used in ((type(layer.lora_variant.get(adapter)).__name__, adapter in layer.lora_variant),
                           ("lora_bias", layer.lora_bias.get(adapter)), ("fan_in_fan_out", layer.fan_in_fan_out)):
            if used:
                raise UserError(f"its LoRA uses {what}, which is not W + B A")
        return layer.lora_B[adapter].weight.float() * layer.scaling[adapter], layer.lora_A[adapter].weight.float()
