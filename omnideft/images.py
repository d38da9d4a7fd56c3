"""Reading and writing images for the CLI: errors name the file; writes are atomic (temp name, then rename)."""

from __future__ import annotations

import os
from pathlib import Path

from PIL import Image

from omnideft.errors import UserError
from omnideft.files import atomic_path


def load_image(path: str | os.PathLike) -> Image.Image:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"image {p} does not exist")
    try:
        img = Image.open(p)
        img.load()
    except Exception as exc:  # PIL raises several types for unreadable files
        raise UserError(f"image {p} is unreadable ({type(exc).__name__})") from None
    return img.convert("RGB")


def save_image_atomic(img: Image.Image, path: str | os.PathLike) -> Path:
    p = Path(path)
    with atomic_path(p) as tmp:
        img.save(tmp, format=(p.suffix.lstrip(".") or "png").upper().replace("JPG", "JPEG"))
    return p
