"""Atomic text writes: a reader (or a crash) never sees a half-written file."""

from __future__ import annotations

import os
from pathlib import Path


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".tmp-{p.name}")
    tmp.write_text(text)
    os.replace(tmp, p)
    return p
