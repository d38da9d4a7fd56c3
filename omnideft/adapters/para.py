"""PaRa (rank reduction) through PEFT's DEFT para mode: W' = W - Q_P right^T W (qr: W - Q Q^T W), only P trains,
at the full learning rate. Not an identity at init; exported exactly as LoRA: B = Q_P, A = -right^T W."""

from __future__ import annotations

from omnideft.adapters.deft import DEFT


class PaRa(DEFT):
    title = "PaRa"
    para = True
    default_projector = "qr"
    identity_init = False

    def trainable_group(self, param_name: str) -> str:
        return "P"

    def lr_ratio(self, group: str, spec) -> float:
        return 1.0
