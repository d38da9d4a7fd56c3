"""Paths as the studio shows and reports them: relative to the folder it runs in when they lie below it (as the
user typed them), else absolute, so a reported command line runs from that folder."""

from __future__ import annotations

import os
from pathlib import Path


def shown_path(path: str | os.PathLike) -> str:
    p = Path(path)
    if not p.is_absolute():
        return str(p)
    try:
        return str(p.relative_to(Path.cwd()))
    except ValueError:
        return str(p)
