"""Exponential moving average of the trainable (adapter) parameters, kept in fp32 on the training device."""

from __future__ import annotations

import torch

from omnideft.errors import UserError


class AdapterEMA:
    def __init__(self, params: dict[str, torch.nn.Parameter], decay: float):
        if not 0.0 < decay < 1.0:
            raise UserError(f"train.ema_decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.params = params
        self.shadow = {n: p.detach().float().clone() for n, p in params.items()}

    @torch.no_grad()
    def update(self) -> None:
        for n, p in self.params.items():
            self.shadow[n].lerp_(p.detach().float(), 1.0 - self.decay)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.shadow)

    def load_state_dict(self, tensors: dict[str, torch.Tensor]) -> None:
        missing = set(self.shadow) - set(tensors)
        if missing:
            raise KeyError(f"EMA state lacks {sorted(missing)[:3]}")
        for n in self.shadow:
            self.shadow[n].copy_(tensors[n])
