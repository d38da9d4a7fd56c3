"""SIGTERM / SIGUSR1 (SLURM preemption, `scancel`, a job's time limit) become a request to checkpoint and stop
after the current step; the ranks agree on it inside the step's one collective. `OMNIDEFT_FAULT` injects faults for
the resume tests: `kill@N` (SIGKILL after step N), `kill-in-checkpoint@N` (SIGKILL while writing step N's
checkpoint), `sigterm@N` (SIGTERM to itself after step N), `nan-loss@N` (step N's loss becomes NaN)."""

from __future__ import annotations

import os
import signal
import threading


class TrainingStopped(Exception):
    """Raised after the checkpoint of a signal-requested stop is written."""

    def __init__(self, signame: str, step: int, checkpoint):
        super().__init__(f"stopped by {signame} at step {step}; checkpoint {checkpoint}; "
                         "continue with `omnideft train RECIPE --resume latest`")
        self.signame, self.step, self.checkpoint = signame, step, checkpoint


class StopRequests:
    SIGNALS = ("SIGTERM", "SIGUSR1")

    def __init__(self):
        self.received: str | None = None
        self._old = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for name in self.SIGNALS:
                sig = getattr(signal, name, None)
                if sig is not None:
                    self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()

    def _handle(self, signum, frame):
        self.received = signal.Signals(signum).name


def fault(point: str, step: int) -> bool:
    """Test hook: act when OMNIDEFT_FAULT names this point and step; True when a passive fault applies."""
    spec = os.environ.get("OMNIDEFT_FAULT", "")
    if "@" not in spec:
        return False
    kind, at = spec.rsplit("@", 1)
    if kind != point or int(at) != step:
        return False
    if point.startswith("kill"):
        os.kill(os.getpid(), signal.SIGKILL)
    elif point == "sigterm":
        os.kill(os.getpid(), signal.SIGTERM)
    return True
