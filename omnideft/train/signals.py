"""SIGTERM / SIGUSR1 (SLURM preemption, `scancel`, a job's time limit) become a request to checkpoint and stop
after the current step; the ranks agree on it inside the step's one collective (train/vote.py)."""

from __future__ import annotations

import signal
import threading

EXIT_STOPPED = 75  # EX_TEMPFAIL: stopped by a signal after writing a checkpoint; resume with --resume latest
OTHER_RANK = "a signal on another rank"  # the signal name on the ranks that did not receive it themselves


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

