"""A loss curve drawn with PIL (no plotting dependency): raw loss in grey, moving average in blue."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw


def loss_plot(losses: list[float], width: int = 640, height: int = 360, window: int = 20) -> Image.Image:
    img = Image.new("RGB", (width, height), "white")
    d = ImageDraw.Draw(img)
    m = 40
    y = np.asarray(losses, dtype=float)
    smooth = np.convolve(y, np.ones(window) / window, mode="valid") if len(y) >= window else y
    lo, hi = float(y.min()), float(y.max())
    span = hi - lo or 1.0

    def pts(vals, offset=0):
        n = max(len(y) - 1, 1)
        return [(m + (i + offset) * (width - 2 * m) / n, height - m - (v - lo) / span * (height - 2 * m))
                for i, v in enumerate(vals)]

    d.rectangle([m, m, width - m, height - m], outline="black")
    if len(y) > 1:
        d.line(pts(y), fill=(190, 190, 190), width=1)
        d.line(pts(smooth, offset=(len(y) - len(smooth)) // 2 if len(smooth) < len(y) else 0), fill=(30, 80, 200),
               width=2)
    d.text((m, 10), f"training loss (moving average of {window})", fill="black")
    d.text((4, m - 6), f"{hi:.3f}", fill="black")
    d.text((4, height - m - 6), f"{lo:.3f}", fill="black")
    d.text((width - m - 60, height - m + 8), f"step {len(y)}", fill="black")
    return img
