"""Deterministic image degradations for the restoration tasks (numpy + PIL only, no OpenCV).

Names follow VisualCloze's list of 32 (lower_snake_case). Each function takes an RGB image and a numpy Generator
seeded from (--seed, sample index), so the same build gives the same pixels.
"""

from __future__ import annotations

import io
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter

Degrade = Callable[[Image.Image, np.random.Generator], Image.Image]


def _arr(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("RGB"), dtype=np.float32)


def _img(arr: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(arr, 0, 255).round().astype(np.uint8))


def _jpeg(img: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def _down_up(img: Image.Image, factor: int, down=Image.BICUBIC, up=Image.BICUBIC) -> Image.Image:
    w, h = img.size
    small = img.resize((max(1, w // factor), max(1, h // factor)), down)
    return small.resize((w, h), up)


def _remap(img: Image.Image, fx: np.ndarray, fy: np.ndarray) -> Image.Image:
    """Nearest-neighbour resampling at float pixel coordinates (fx, fy), clamped to the border."""
    a = np.asarray(img.convert("RGB"))
    h, w = a.shape[:2]
    xi = np.clip(np.rint(fx), 0, w - 1).astype(int)
    yi = np.clip(np.rint(fy), 0, h - 1).astype(int)
    return Image.fromarray(a[yi, xi])


def _radial(img: Image.Image, k: float) -> Image.Image:
    w, h = img.size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    nx, ny = (xx - w / 2) / (w / 2), (yy - h / 2) / (h / 2)
    r2 = nx * nx + ny * ny
    scale = 1 + k * r2
    return _remap(img, nx * scale * w / 2 + w / 2, ny * scale * h / 2 + h / 2)


def _elastic(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    w, h = img.size
    coarse = rng.normal(0, 1, size=(2, 5, 5)).astype(np.float32)
    dx = np.asarray(Image.fromarray(coarse[0]).resize((w, h), Image.BICUBIC)) * w * 0.02
    dy = np.asarray(Image.fromarray(coarse[1]).resize((w, h), Image.BICUBIC)) * h * 0.02
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    return _remap(img, xx + dx, yy + dy)


def _noise(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    return _img(_arr(img) + rng.normal(0, rng.uniform(10, 30), size=_arr(img).shape))


def _poisson(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    scale = rng.uniform(8, 32)
    return _img(rng.poisson(_arr(img) / 255.0 * scale) / scale * 255.0)


def _salt_pepper(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    a = _arr(img)
    u = rng.random(a.shape[:2])
    amount = rng.uniform(0.02, 0.08)
    a[u < amount / 2] = 0
    a[u > 1 - amount / 2] = 255
    return _img(a)


def _inpainting(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    out = img.convert("RGB").copy()
    draw = ImageDraw.Draw(out)
    w, h = out.size
    for _ in range(int(rng.integers(1, 4))):
        x0, y0 = int(rng.integers(0, w * 3 // 4)), int(rng.integers(0, h * 3 // 4))
        draw.rectangle([x0, y0, x0 + int(rng.integers(w // 8, w // 3)), y0 + int(rng.integers(h // 8, h // 3))],
                       fill=(0, 0, 0))
    return out


def _rain(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    out = img.convert("RGB").copy()
    draw = ImageDraw.Draw(out)
    w, h = out.size
    slant = rng.uniform(-0.3, 0.3)
    for _ in range(int(w * h / 400) + 1):
        x, y = float(rng.uniform(0, w)), float(rng.uniform(0, h))
        length = float(rng.uniform(h / 30, h / 10))
        draw.line([x, y, x + slant * length, y + length], fill=(200, 200, 200), width=1)
    return out


def _frost(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    w, h = img.size
    ice = rng.uniform(0, 1, size=(max(1, h // 4), max(1, w // 4)))
    ice = np.asarray(Image.fromarray((ice * 255).astype(np.uint8)).resize((w, h), Image.BICUBIC), dtype=np.float32)
    a = _arr(img)
    return _img(a * 0.7 + ice[..., None] * 0.45)


def _color_distortion(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    return _img(_arr(img) * rng.uniform(0.6, 1.4, size=3) + rng.uniform(-20, 20, size=3))


def _mosaic(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Mosaic a random rectangle (pixelation of one region, as a censoring mosaic)."""
    w, h = img.size
    x0, y0 = int(rng.integers(0, w // 2)), int(rng.integers(0, h // 2))
    box = (x0, y0, x0 + w // 2, y0 + h // 2)
    out = img.convert("RGB").copy()
    out.paste(_down_up(out.crop(box), 8, Image.BILINEAR, Image.NEAREST), box)
    return out


DEGRADATIONS: dict[str, Degrade] = {
    "blur": lambda im, r: im.filter(ImageFilter.BoxBlur(float(r.uniform(1, 3)))),
    "compression": lambda im, r: _jpeg(im, int(r.integers(10, 30))),
    "sr_x2": lambda im, r: _down_up(im, 2),
    "sr_x4": lambda im, r: _down_up(im, 4),
    "pixelate": lambda im, r: _down_up(im, int(r.integers(4, 9)), Image.BILINEAR, Image.NEAREST),
    "defocus": lambda im, r: im.filter(ImageFilter.BoxBlur(float(r.uniform(2, 4)))).filter(ImageFilter.SMOOTH_MORE),
    "gaussian_blur": lambda im, r: im.filter(ImageFilter.GaussianBlur(float(r.uniform(1, 3)))),
    "oversharpen": lambda im, r: ImageEnhance.Sharpness(im).enhance(float(r.uniform(4, 8))),
    "gaussian_noise": _noise,
    "poisson_noise": _poisson,
    "salt_and_pepper_noise": _salt_pepper,
    "mosaic": _mosaic,
    "contrast_up": lambda im, r: ImageEnhance.Contrast(im).enhance(float(r.uniform(1.5, 2.2))),
    "contrast_down": lambda im, r: ImageEnhance.Contrast(im).enhance(float(r.uniform(0.3, 0.6))),
    "quantization": lambda im, r: im.convert("RGB").quantize(int(r.integers(4, 16)), Image.Quantize.FASTOCTREE,
                                                             dither=Image.Dither.NONE).convert("RGB"),
    "jpeg": lambda im, r: _jpeg(im, int(r.integers(30, 60))),
    "brighten": lambda im, r: ImageEnhance.Brightness(im).enhance(float(r.uniform(1.4, 1.9))),
    "darken": lambda im, r: ImageEnhance.Brightness(im).enhance(float(r.uniform(0.4, 0.7))),
    "low_light": lambda im, r: _img((_arr(im) / 255.0) ** float(r.uniform(2.0, 3.0)) * 255.0 * 0.6),
    "saturate_up": lambda im, r: ImageEnhance.Color(im).enhance(float(r.uniform(1.8, 2.5))),
    "saturate_down": lambda im, r: ImageEnhance.Color(im).enhance(float(r.uniform(0.2, 0.5))),
    "gray": lambda im, r: im.convert("L").convert("RGB"),
    "color_distortion": _color_distortion,
    "inpainting": _inpainting,
    "rotate90": lambda im, r: im.transpose(Image.Transpose.ROTATE_90),
    "rotate180": lambda im, r: im.transpose(Image.Transpose.ROTATE_180),
    "rotate270": lambda im, r: im.transpose(Image.Transpose.ROTATE_270),
    "barrel": lambda im, r: _radial(im, float(-r.uniform(0.15, 0.3))),
    "pincushion": lambda im, r: _radial(im, float(r.uniform(0.15, 0.3))),
    "elastic": _elastic,
    "rain": _rain,
    "frost": _frost,
}


def degrade(img: Image.Image, name: str, rng: np.random.Generator) -> Image.Image:
    return DEGRADATIONS[name](img.convert("RGB"), rng).convert("RGB")
