"""Progress bars that behave in logs: live on a terminal, one line every 30 s when stderr is a file (SLURM, CI)."""

from __future__ import annotations

import sys

from tqdm.auto import tqdm


def progress_bar(*args, **kwargs) -> tqdm:
    if not sys.stderr.isatty():
        kwargs.setdefault("mininterval", 30.0)
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(*args, **kwargs)
