"""Safe image loading with named skip reasons, and the resizing and masking the builders share. Encoding for the
shards is contract 1's (omnideft/data/format/images.py).

Every failure to read a source image becomes `SkipSample(reason, detail)`, which the runner counts in the manifest
instead of stopping the build.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

# Scenes of InsDet are 6144x8192 = 50 MP; anything far beyond that is more likely a bomb than a photo.
DEFAULT_MAX_PIXELS = 120_000_000
# Modes whose pixels convert losslessly enough to RGB/L; 16-bit and float images need a decision we do not make.
CONVERTIBLE_MODES = {"RGB", "RGBA", "RGBX", "L", "LA", "P", "PA", "CMYK", "YCbCr", "1", "La"}

SKIP_REASONS = ("missing", "zero_size", "corrupt", "truncated", "too_large", "wrong_mode", "bad_metadata",
                "no_context", "caption_failed", "outside_images")


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
    """Decode encoded bytes into a fully loaded image of `mode`, or raise SkipSample naming why not.

    `draft`: JPEGs may be decoded at 1/2, 1/4 or 1/8 scale as long as both sides stay >= draft (fast for
    InsDet's 50-megapixel scenes).
    """
    if data is None:
        raise SkipSample("missing", what)
    if len(data) == 0:
        raise SkipSample("zero_size", what)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            if img.width * img.height > max_pixels:
                raise SkipSample("too_large", f"{what} is {img.width}x{img.height}")
            if draft and img.format == "JPEG":
                img.draft("RGB", (draft, draft))
            img.load()
    except SkipSample:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise SkipSample("too_large", f"{what}: {exc}") from None
    except UnidentifiedImageError:
        raise SkipSample("corrupt", what) from None
    except (OSError, SyntaxError, ValueError) as exc:
        reason = "truncated" if "truncat" in str(exc).lower() else "corrupt"
        raise SkipSample(reason, f"{what}: {exc}") from None
    if img.width == 0 or img.height == 0:
        raise SkipSample("zero_size", what)
    if img.mode not in CONVERTIBLE_MODES:
        raise SkipSample("wrong_mode", f"{what} has mode {img.mode}")
    if img.mode in ("P", "PA") and mode == "RGB":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "La") and mode == "RGB":
        return _flatten_on_white(img)
    return img if img.mode == mode else img.convert(mode)


def load_image(path: str | os.PathLike, mode: str = "RGB", max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    return decode_image(read_bytes(path), str(path), mode=mode, max_pixels=max_pixels)


def _flatten_on_white(img: Image.Image) -> Image.Image:
    rgba = img.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


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
