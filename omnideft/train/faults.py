"""Fault hooks for the resume and failure tests, handed to `train()` like `validate` is.

`omnideft train` builds them once from `OMNIDEFT_FAULT` (the tests start real processes, so the environment is the
channel into the CLI): `kill@N` (SIGKILL after step N), `kill-in-checkpoint@N` (SIGKILL while writing step N's
checkpoint), `sigterm@N` (SIGTERM to itself after step N), `nan-loss@N` (step N's loss becomes NaN), `nan-grad@N`
(step N's loss stays finite, its gradient becomes NaN), `disk-full-in-checkpoint@N` (ENOSPC while writing step N's
checkpoint).
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass

from omnideft.errors import UserError

POINTS = ("kill", "kill-in-checkpoint", "sigterm", "nan-loss", "nan-grad", "disk-full-in-checkpoint")


@dataclass(frozen=True)
class Faults:
    point: str | None = None
    step: int = 0

    @classmethod
    def parse(cls, spec: str) -> Faults:
        """`POINT@STEP`, or "" for none."""
        if not spec:
            return cls()
        point, _, at = spec.rpartition("@")
        if point not in POINTS or not at.isdigit():
            raise UserError(f"OMNIDEFT_FAULT={spec!r} must be POINT@STEP with POINT one of {', '.join(POINTS)}")
        return cls(point, int(at))

    def fire(self, point: str, step: int) -> bool:
        """Act when this is the injected point and step; True when a passive fault (nan-loss, nan-grad,
        disk-full-in-checkpoint) applies."""
        if point != self.point or step != self.step:
            return False
        if point.startswith("kill"):
            os.kill(os.getpid(), signal.SIGKILL)
        elif point == "sigterm":
            os.kill(os.getpid(), signal.SIGTERM)
        return True


NO_FAULTS = Faults()
