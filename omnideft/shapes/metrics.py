"""Scoring a generated shape against its true target with exact masks.

IoU = |pred ∩ true| / |pred ∪ true| of the shape masks (1 when both are empty). Colour error = Euclidean RGB
distance (0-255 scale, so 0..441) between the mean generated colour and the colour the shape should have, the mean
taken over the pixels that are shape in both masks (so a slightly misplaced edge does not count as a wrong colour),
or over the true shape's pixels when the two do not overlap (a generation that drew nothing there scores the
background's distance to the colour).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from omnideft.shapes.scene import foreground


def target_mask(img: Image.Image, kind: str = "filled") -> np.ndarray:
    """Shape pixels: non-background for filled drawings, bright pixels for edge maps."""
    if kind == "edges":
        return np.asarray(img.convert("L"), dtype=np.float32) > 127
    return foreground(img)


def shape_iou(pred: Image.Image, true: Image.Image, kind: str = "filled") -> float:
    p, t = target_mask(pred, kind), target_mask(true.resize(pred.size, Image.NEAREST), kind)
    union = np.logical_or(p, t).sum()
    return 1.0 if union == 0 else float(np.logical_and(p, t).sum() / union)


def colour_error(pred: Image.Image, true: Image.Image, colour: tuple[int, int, int], kind: str = "filled") -> float:
    t = target_mask(true.resize(pred.size, Image.NEAREST), kind)
    if not t.any():
        return 0.0
    both = t & target_mask(pred, kind)
    arr = np.asarray(pred.convert("RGB"), dtype=np.float64)[both if both.any() else t]
    return float(np.linalg.norm(arr.mean(axis=0) - np.asarray(colour, dtype=np.float64)))
