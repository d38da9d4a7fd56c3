"""PaRa (rank reduction) through PEFT's DEFT para mode: W' = W - Q Q^T W, only P trains."""

from omnideft.adapters import deft


def build_config(spec, target_modules: list[str]):
    return deft.build_config(spec, target_modules, para=True)


def trainable_groups(name: str) -> str:
    return "P"
