"""Procedurally drawn shapes and their edge maps: a tiny in-context task ("edges -> filled shape") that needs
no download. Deterministic for a seed."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

COLOURS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 80, 220), "yellow": (230, 210, 40),
           "purple": (150, 60, 190), "orange": (240, 140, 30)}
SHAPES = ("circle", "square", "triangle")


def draw_shape(shape: str, colour: str, size: int, rng: np.random.Generator) -> Image.Image:
    img = Image.new("RGB", (size, size), (245, 245, 240))
    d = ImageDraw.Draw(img)
    r = int(size * rng.uniform(0.22, 0.36))
    cx, cy = (int(size * rng.uniform(0.35, 0.65)) for _ in range(2))
    fill = COLOURS[colour]
    if shape == "circle":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif shape == "square":
        d.rectangle([cx - r, cy - r, cx + r, cy + r], fill=fill)
    else:
        d.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)
    return img


def edge_map(img: Image.Image) -> Image.Image:
    """White edges on black, like a canny condition image."""
    edges = img.convert("L").filter(ImageFilter.FIND_EDGES).point(lambda v: 255 if v > 24 else 0)
    return Image.merge("RGB", [edges] * 3)


def random_pair(rng: np.random.Generator, size: int) -> tuple[Image.Image, Image.Image, str]:
    shape = SHAPES[rng.integers(len(SHAPES))]
    colour = list(COLOURS)[rng.integers(len(COLOURS))]
    img = draw_shape(shape, colour, size, rng)
    return edge_map(img), img, f"a {colour} {shape}"
