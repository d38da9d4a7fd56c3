"""Deterministic encoding of shard images: fixed settings and no metadata chunks, so equal pixels give equal bytes
(contract 1: the same inputs and seed give byte-identical shards). `png` for pixels measured later (masks, edge
maps), `jpg` for photos, lossless `webp`."""

from __future__ import annotations

import io

from PIL import Image

JPEG_QUALITY = 95
PNG_COMPRESS_LEVEL = 1  # fast; PNG is lossless at any level, and level 1 keeps the builder near the codec limit


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
