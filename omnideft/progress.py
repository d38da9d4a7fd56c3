"""Progress bars that behave in logs: live on a terminal; in a file (SLURM, CI, `> log 2>&1`) plain lines, one every
LOG_EVERY seconds and one when the bar ends, with no carriage returns."""

from __future__ import annotations

import sys
import time

from tqdm import tqdm as plain_tqdm
from tqdm.auto import tqdm

LOG_EVERY = 30.0  # seconds between two lines of one bar in a log file


class LogLineBar(plain_tqdm):
    """tqdm writing whole lines: tqdm itself redraws in place with '\\r' on every refresh, and `set_postfix` refreshes
    on every call (once per training step: ~80 kB of bars in the log of a 90 s demo, measured)."""

    def __init__(self, *args, **kwargs):
        self._line_at = time.monotonic()  # a bar shorter than LOG_EVERY writes only its last line
        super().__init__(*args, **kwargs)

    def display(self, msg=None, pos=None):
        if msg == "":  # tqdm clears a bar that is not kept; a log keeps what it printed
            return False
        closing = self.disable  # close() disables the bar, then displays it once more and ends the line itself
        now = time.monotonic()
        if not closing and now - self._line_at < LOG_EVERY:
            return True
        self._line_at = now
        self.fp.write((self.__str__() if msg is None else msg) + ("" if closing else "\n"))
        self.fp.flush()
        return True


def progress_bar(*args, **kwargs) -> tqdm:
    target = kwargs.get("file") or sys.stderr
    if not getattr(target, "isatty", lambda: False)():
        kwargs.setdefault("mininterval", LOG_EVERY)
        return LogLineBar(*args, **kwargs)
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(*args, **kwargs)
