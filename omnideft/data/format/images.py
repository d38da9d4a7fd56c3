"""Images in and out of omnideft, torch-free (the builders use it too).

In: `open_image` is the one loader every image goes through - the builders' sources, `generate`'s query and example
images, `eval`'s folders, the studio's uploads - so training and inference see the same pixels:
- size: more than `MAX_PIXELS` pixels, or a long side more than `MAX_ASPECT` times the short side, is refused from
  the header, before anything is decoded;
- bit depth: 16-bit images (`I;16*`, `I` holding 0..65535) are scaled to 8 bits (v * 255 / 65535, rounded), not
  clipped; PIL itself keeps the high byte of 48/64-bit RGB(A) PNGs (within one level of the same scale);
- alpha: RGBA, LA, PA, palettes and single colours marked transparent are flattened on white;
- mode: the result is RGB (or L when asked); modes with no safe 8-bit conversion (float `F`, LAB, ...) are refused.
A refusal is `ImageRejected`: a UserError (one line naming the image and its size or mode) whose `reason` the
builders count in the manifest.

Out: deterministic encoding of shard images - fixed settings and no metadata chunks, so equal pixels give equal bytes
(contract 1: the same inputs and seed give byte-identical shards). `png` for pixels measured later (masks, edge
maps), `jpg` for photos, lossless `webp`.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from omnideft.errors import UserError

JPEG_QUALITY = 95
PNG_COMPRESS_LEVEL = 1  # fast; PNG is lossless at any level, and level 1 keeps the builder near the codec limit

# Scenes of InsDet are 6144x8192 = 50 MP; anything far beyond that is more likely a bomb than a photo (120 MP of RGB
# is 360 MB decoded).
MAX_PIXELS = 120_000_000
# OmniGen takes images with sides that are multiples of 16 up to its input size, 1024 by default: 1024x16 is the
# narrowest whole image it can see. Anything narrower would be mostly cropped away or squeezed below one patch.
MAX_ASPECT = 64
SIXTEEN_BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I"}
ALPHA_MODES = {"RGBA", "RGBa", "LA", "La", "PA"}
EIGHT_BIT_MODES = {"RGB", "RGBX", "L", "1", "CMYK", "YCbCr"}  # convert to RGB / L with PIL's own conversions


class ImageRejected(UserError):
    """An image the loader will not use. `reason` is one of missing, zero_size, corrupt, truncated, too_large,
    bad_aspect, wrong_mode (the builders' skip reasons)."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def open_image(source: bytes | str | os.PathLike, name: str | None = None, *, mode: str = "RGB",
               max_pixels: int = MAX_PIXELS, max_aspect: float = MAX_ASPECT, draft: int | None = None) -> Image.Image:
    """The fully loaded image of `source` (a file or its bytes) in `mode` ("RGB" or "L"), by the rules above, or
    ImageRejected naming `name` (default: the path).

    `draft`: JPEGs may be decoded at 1/2, 1/4 or 1/8 scale as long as both sides stay >= draft (fast for InsDet's
    50-megapixel scenes)."""
    if isinstance(source, (bytes, bytearray)):
        name, data = name or "image", bytes(source)
    else:
        name = name or str(source)
        if not Path(source).is_file():
            raise ImageRejected("missing", f"image {name} does not exist")
        data = Path(source).read_bytes()
    if not data:
        raise ImageRejected("zero_size", f"image {name} is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            # PIL warns from 89 MP on; the cap is max_pixels, checked below (PIL's own error stays, at 179 MP)
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
        check_size(img, name, max_pixels, max_aspect)  # from the header: nothing is decoded yet
        if draft and img.format == "JPEG":
            img.draft("RGB", (draft, draft))
        img.load()
    except ImageRejected:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageRejected("too_large", f"image {name}: {exc}") from None
    except UnidentifiedImageError:
        raise ImageRejected("corrupt", f"image {name} is unreadable (not an image format PIL knows)") from None
    except Exception as exc:  # PIL raises many types (OSError, SyntaxError, ValueError, struct.error) for bad data
        reason = "truncated" if "truncat" in str(exc).lower() else "corrupt"
        raise ImageRejected(reason, f"image {name} is unreadable ({type(exc).__name__}: {exc})") from None
    return to_mode(img, name, mode)


def check_size(img: Image.Image, name: str, max_pixels: int = MAX_PIXELS, max_aspect: float = MAX_ASPECT) -> None:
    width, height = img.size
    if width == 0 or height == 0:
        raise ImageRejected("zero_size", f"image {name} is {width}x{height}")
    if width * height > max_pixels:
        raise ImageRejected("too_large", f"image {name} is {width}x{height} = {width * height / 1e6:.1f} MP, more "
                                         f"than the {max_pixels / 1e6:g} MP an image may have")
    if max(width, height) > max_aspect * min(width, height):
        raise ImageRejected("bad_aspect", f"image {name} is {width}x{height}, more than {max_aspect:g}:1 (the model "
                                          f"sees images up to {max_aspect * 16:g}x16)")


def to_mode(img: Image.Image, name: str, mode: str = "RGB") -> Image.Image:
    """`img` (loaded) in `mode` by the loader's rules: 16 bits scaled to 8, transparency flattened on white."""
    if img.mode in SIXTEEN_BIT_MODES:
        img = sixteen_to_eight_bit(img, name)
    if img.mode in ("P", "PA") or "transparency" in img.info:  # palettes; a colour key marked transparent (tRNS)
        img = img.convert("RGBA" if img.mode == "PA" or "transparency" in img.info else "RGB")
    if img.mode in ALPHA_MODES:
        img = flatten_on_white(img)
    if img.mode not in EIGHT_BIT_MODES:
        raise ImageRejected("wrong_mode", f"image {name} has mode {img.mode}, which has no safe conversion to 8-bit "
                                          "RGB")
    return img if img.mode == mode else img.convert(mode)


def sixteen_to_eight_bit(img: Image.Image, name: str) -> Image.Image:
    """16-bit grey to 8-bit L by v * 255 / 65535, rounded (PIL's own convert clips everything above 255 to white)."""
    values = np.asarray(img).astype(np.int64)
    if values.size and (values.min() < 0 or values.max() > 65535):  # "I" is 32-bit: only the 16-bit range is known
        raise ImageRejected("wrong_mode", f"image {name} has mode {img.mode} with values {values.min()}.."
                                          f"{values.max()}, outside the 16-bit range 0..65535")
    return Image.fromarray(((values * 255 + 32767) // 65535).astype(np.uint8), "L")


def flatten_on_white(img: Image.Image) -> Image.Image:
    rgba = img.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def encode_image(img: Image.Image, ext: str) -> bytes:
    buf = io.BytesIO()
    if ext == "png":
        img.save(buf, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    elif ext == "jpg":
        img.convert("RGB").save(buf, format="JPEG", quality=JPEG_QUALITY, subsampling=0, optimize=False)
    elif ext == "webp":
        img.save(buf, format="WEBP", lossless=True, method=4)
    else:
        raise ValueError(f"image extension {ext!r} is not one of jpg, png, webp")
    return buf.getvalue()
