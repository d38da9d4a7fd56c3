"""LoRA through PEFT: W' = W + (alpha/r) B A, B = 0 at init."""

from peft import LoraConfig


def build_config(spec, target_modules: list[str]) -> LoraConfig:
    return LoraConfig(
        r=spec.rank,
        lora_alpha=spec.alpha if spec.alpha is not None else spec.rank,
        lora_dropout=spec.dropout,
        target_modules=target_modules,
        init_lora_weights=True if spec.init == "identity" else "gaussian",
    )


def trainable_groups(name: str) -> str:
    return "lora"
