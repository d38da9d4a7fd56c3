"""Source images for the builders, read by the one loader every image of omnideft goes through
(`omnideft.data.format.images.open_image`: size and aspect limits, 16 bits, alpha on white), with its refusals as
named skip reasons; and the resizing and masking the builders share. Encoding for the shards is contract 1's
(omnideft/data/format/images.py too).

Every failure to read a source image becomes `SkipSample(reason, detail)`, which the runner counts in the manifest
instead of stopping the build.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from omnideft.data.format.images import MAX_PIXELS, ImageRejected, open_image

DEFAULT_MAX_PIXELS = MAX_PIXELS

SKIP_REASONS = ("missing", "zero_size", "corrupt", "truncated", "too_large", "bad_aspect", "wrong_mode",
                "bad_metadata", "no_context", "caption_failed", "outside_images")


class SkipSample(Exception):
    """This sample cannot be built; `reason` is one of SKIP_REASONS and ends up in the manifest."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def read_bytes(path: str | os.PathLike) -> bytes:
    p = Path(path)
    if not p.is_file():
        raise SkipSample("missing", str(p))
    data = p.read_bytes()
    if not data:
        raise SkipSample("zero_size", str(p))
    return data


def decode_image(data: bytes | None, what: str = "image", mode: str = "RGB",
                 max_pixels: int = DEFAULT_MAX_PIXELS, draft: int | None = None) -> Image.Image:
    """Decode encoded bytes into a fully loaded image of `mode` by the shared loader, or raise SkipSample naming why
    not. `draft`: see `open_image`."""
    if data is None:
        raise SkipSample("missing", what)
    try:
        return open_image(data, what, mode=mode, max_pixels=max_pixels, draft=draft)
    except ImageRejected as exc:
        raise SkipSample(exc.reason, str(exc)) from None


def load_image(path: str | os.PathLike, mode: str = "RGB", max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    return decode_image(read_bytes(path), str(path), mode=mode, max_pixels=max_pixels)


def square_resize(img: Image.Image, size: int) -> Image.Image:
    """Centre-crop to a square, then resize to size x size (VisualCloze's cells are squares)."""
    w, h = img.size
    side = min(w, h)
    if w != h:
        left, top = (w - side) // 2, (h - side) // 2
        img = img.crop((left, top, left + side, top + side))
    return img if side == size else img.resize((size, size), Image.BICUBIC)


def fit_box(width: int, height: int, size: int, multiple: int = 16) -> tuple[tuple[int, int], tuple[float, ...], float]:
    """Output size with the longest side about `size` and both sides multiples of `multiple` (VAE patching), the
    source box (x0, y0, x1, y1) that maps onto it and the one scale s of both axes: the box is the centred crop of
    the source with the output's aspect ratio, so nothing is stretched. A source pixel u lands at (u - x0) * s."""
    scale = size / max(width, height)
    nw = max(multiple, int(round(width * scale / multiple)) * multiple)
    nh = max(multiple, int(round(height * scale / multiple)) * multiple)
    s = max(nw / width, nh / height)
    bw, bh = nw / s, nh / s
    x0, y0 = (width - bw) / 2, (height - bh) / 2
    return (nw, nh), (x0, y0, x0 + bw, y0 + bh), s


def fit_longest_side(img: Image.Image, size: int, multiple: int = 16) -> Image.Image:
    """Resize so the longest side is about `size` with sides rounded to `multiple`, keeping the aspect ratio by a
    centred crop of the rounding's few pixels (`fit_box`), never by stretching."""
    (nw, nh), box, _ = fit_box(img.width, img.height, size, multiple)
    return img if (nw, nh) == img.size else img.resize((nw, nh), Image.BICUBIC, box=box)


def cap_longest_side(img: Image.Image, size: int) -> Image.Image:
    """Shrink (never enlarge) so the longest side is at most `size`, keeping the aspect ratio."""
    if max(img.size) <= size:
        return img
    scale = size / max(img.size)
    return img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.BICUBIC)


def apply_mask(img: Image.Image, mask: Image.Image, keep_foreground: bool = True, fill: int = 0) -> Image.Image:
    """target x mask (or x (1 - mask)) with the mask thresholded at 0.5, as VisualCloze does."""
    m = np.asarray(mask.convert("L").resize(img.size, Image.NEAREST)) >= 128
    if not keep_foreground:
        m = ~m
    arr = np.asarray(img.convert("RGB")).copy()
    arr[~m] = fill
    return Image.fromarray(arr)
