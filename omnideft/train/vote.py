"""The one collective of a training step: what every rank tells the others, summed across ranks in a single
all-reduce and read back by name."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class StepVote:
    loss: float  # this rank's mean loss; 0 when it is not finite
    nonfinite: int  # 1 when this rank's loss is not finite
    stop: int  # 1 when this rank received SIGTERM / SIGUSR1

    def summed(self, accelerator) -> StepVote:
        """Every field summed over the ranks (one all-reduce of a small tensor; all ranks must call)."""
        names = [f.name for f in dataclasses.fields(self)]
        local = torch.tensor([float(getattr(self, n)) for n in names], device=accelerator.device)
        total = accelerator.reduce(local, "sum").tolist()
        return StepVote(**{n: type(getattr(self, n))(v) for n, v in zip(names, total)})
