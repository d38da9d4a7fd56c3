"""One coloured shape on a plain background, drawn without anti-aliasing so its mask is exact.

A `Scene` is a few numbers (shape, colour, centre, radius); `render` draws it, `outline` turns any drawing into the
white-on-black edge map a Canny condition looks like. Everything is deterministic for a numpy Generator.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from PIL import Image, ImageDraw

BACKGROUND = (245, 245, 240)
COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (230, 200, 30),
           "purple": (150, 60, 190), "orange": (240, 130, 30)}
SHAPES = ("circle", "square", "triangle")


@dataclass(frozen=True)
class Scene:
    shape: str
    colour: str
    cx: float  # centre and radius as fractions of the image side
    cy: float
    r: float

    def with_colour(self, colour: str) -> Scene:
        return replace(self, colour=colour)


def sample_scene(rng: np.random.Generator, colour: str | None = None, centre: tuple[float, float] | None = None,
                 radius: tuple[float, float] = (0.16, 0.26)) -> Scene:
    """A random shape; the centre keeps the whole shape inside the image."""
    shape = SHAPES[int(rng.integers(len(SHAPES)))]
    colour = colour or list(COLOURS)[int(rng.integers(len(COLOURS)))]
    r = float(rng.uniform(*radius))
    if centre is None:
        lo, hi = r + 0.04, 1 - r - 0.04
        centre = (float(rng.uniform(lo, hi)), float(rng.uniform(lo, hi)))
    return Scene(shape, colour, centre[0], centre[1], r)


def render(scene: Scene, size: int) -> Image.Image:
    img = Image.new("RGB", (size, size), BACKGROUND)
    d = ImageDraw.Draw(img)
    cx, cy, r = scene.cx * size, scene.cy * size, scene.r * size
    fill = COLOURS[scene.colour]
    if scene.shape == "circle":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif scene.shape == "square":
        d.rectangle([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif scene.shape == "triangle":
        d.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)
    else:
        raise ValueError(f"unknown shape {scene.shape!r}; known: {SHAPES}")
    return img


def foreground(img: Image.Image) -> np.ndarray:
    """Boolean mask of pixels that differ from the background (the drawn shape)."""
    arr = np.asarray(img.convert("RGB"), dtype=np.float32)
    return np.linalg.norm(arr - np.asarray(BACKGROUND, dtype=np.float32), axis=-1) > 60


def outline(img: Image.Image, width: int = 2) -> Image.Image:
    """White edges on black: the inner boundary of the foreground mask, `width` pixels wide (two survive the 8x
    VAE at 64 px; one does not)."""
    m = foreground(img)
    inner = m
    for _ in range(width):
        pad = np.pad(inner, 1, mode="edge")
        inner = pad[1:-1, 1:-1] & pad[:-2, 1:-1] & pad[2:, 1:-1] & pad[1:-1, :-2] & pad[1:-1, 2:]
    edge = (m & ~inner).astype(np.uint8) * 255
    return Image.fromarray(np.stack([edge] * 3, axis=-1))
