"""SIGTERM (a job's time limit, `kill`) and Ctrl-C become a request to stop after the current step: the loop then
writes a checkpoint and raises PretrainingStopped, which the CLI turns into one line and the shell's exit code for
the signal (143, 130). A second Ctrl-C interrupts at once, as usual, without a new checkpoint (the last periodic one
stays)."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

from omnideft.errors import UserError


class PretrainingStopped(UserError):
    """Raised after the checkpoint of a signal-requested stop is written; exit code 128 + the signal's number."""

    def __init__(self, signame: str, step: int, checkpoint: Path, out: Path):
        super().__init__(f"pretraining stopped by {signame} after step {step}; checkpoint {checkpoint}; continue "
                         f"with the same command and --resume (`omnideft pretrain RECIPE ... --out {out} --resume`)")
        self.signame, self.step, self.checkpoint = signame, step, checkpoint
        self.exit_code = 128 + int(getattr(signal, signame))


class StopSignals:
    """Within the block, SIGTERM and the first SIGINT only record their name in `received`."""

    SIGNALS = ("SIGTERM", "SIGINT")

    def __init__(self):
        self.received: str | None = None
        self._old: dict = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():  # signal handlers belong to the main thread
            for name in self.SIGNALS:
                sig = getattr(signal, name)
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()

    def _handle(self, signum, frame) -> None:
        name = signal.Signals(signum).name
        if name == "SIGINT" and self.received == "SIGINT":
            raise KeyboardInterrupt
        self.received = self.received or name
