"""PaRa (rank reduction) through PEFT's DEFT para mode: W' = W - Q_P right^T W (qr: W - Q Q^T W), only P trains."""

from omnideft.adapters import deft


def build_config(spec, target_modules: list[str]):
    return deft.build_config(spec, target_modules, para=True)


def after_inject(model, spec, adapter_name: str) -> None:
    deft.after_inject(model, spec, adapter_name, para=True)


def peft_native(spec) -> bool:
    return deft.projector_of(spec, para=True) in deft.PEFT_PROJECTORS


def trainable_groups(name: str) -> str:
    return "P"
