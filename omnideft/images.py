"""Reading and writing images for the CLI: every image is read by the one loader of the shard format
(`omnideft.data.format.images.open_image`, shared with the builders), so inference sees the pixels training saw;
errors name the file; writes are atomic (temp name, then rename)."""

from __future__ import annotations

import os
from pathlib import Path

from PIL import Image

from omnideft.data.format.images import check_size, open_image, to_mode
from omnideft.files import atomic_path


def load_image(path: str | os.PathLike) -> Image.Image:
    """The image at `path` as RGB, by the loader's rules (size and aspect limits, 16 bits, alpha on white)."""
    return open_image(Path(path))


def as_image(image: Image.Image | str | os.PathLike, name: str = "image") -> Image.Image:
    """A path read by `load_image`, or an image given in memory held to the same rules."""
    if isinstance(image, (str, os.PathLike)):
        return load_image(image)
    check_size(image, name)
    image.load()
    return to_mode(image, name)


def save_image_atomic(img: Image.Image, path: str | os.PathLike) -> Path:
    p = Path(path)
    with atomic_path(p) as tmp:
        img.save(tmp, format=(p.suffix.lstrip(".") or "png").upper().replace("JPG", "JPEG"))
    return p
