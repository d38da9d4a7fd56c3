"""A grid of small bar charts drawn with PIL (no plotting dependency): one panel per (group, metric), one bar
per run, the best bars outlined, values printed on the bars."""

from __future__ import annotations

import math

from PIL import Image, ImageDraw

COLORS = [(55, 126, 184), (228, 26, 28), (77, 175, 74), (152, 78, 163), (255, 127, 0), (166, 86, 40),
          (247, 129, 191), (153, 153, 153)]
PANEL_W, PANEL_H, MARGIN = 260, 170, 24


def bar_chart(panels: list[dict], labels: list[str], columns: int = 4) -> Image.Image:
    """panels: [{"title": str, "values": [float|None per label], "best": set of indices}]."""
    cols = max(1, min(columns, len(panels)))
    rows = max(1, math.ceil(len(panels) / cols))
    legend_h = 18 * len(labels) + 12
    img = Image.new("RGB", (cols * PANEL_W, rows * PANEL_H + legend_h), "white")
    d = ImageDraw.Draw(img)
    for k, panel in enumerate(panels):
        x0, y0 = (k % cols) * PANEL_W, (k // cols) * PANEL_H
        _panel(d, x0, y0, panel, len(labels))
    y = rows * PANEL_H + 6
    for i, label in enumerate(labels):
        d.rectangle([10, y + 18 * i, 22, y + 18 * i + 12], fill=COLORS[i % len(COLORS)])
        d.text((28, y + 18 * i), label, fill="black")
    return img


def _panel(d: ImageDraw.ImageDraw, x0: int, y0: int, panel: dict, n: int) -> None:
    d.text((x0 + 6, y0 + 4), panel["title"][:44], fill="black")
    values = [v for v in panel["values"] if v is not None and math.isfinite(v)]
    top, bottom = y0 + MARGIN, y0 + PANEL_H - MARGIN
    if not values:
        d.text((x0 + MARGIN, top + 40), "no finite values", fill="gray")
        return
    lo, hi = min(0.0, min(values)), max(0.0, max(values))
    span = (hi - lo) or 1.0
    zero = bottom - (0 - lo) / span * (bottom - top)
    d.line([x0 + MARGIN, zero, x0 + PANEL_W - 8, zero], fill="black")
    width = (PANEL_W - MARGIN - 16) / max(n, 1)
    for i, v in enumerate(panel["values"]):
        if v is None or not math.isfinite(v):
            continue
        left = x0 + MARGIN + i * width + 3
        y = bottom - (v - lo) / span * (bottom - top)
        box = [left, min(y, zero), left + width - 6, max(y, zero)]
        d.rectangle(box, fill=COLORS[i % len(COLORS)], outline="black" if i in panel.get("best", ()) else None,
                    width=2)
        d.text((left, min(y, zero) - 12), f"{v:.3g}", fill="black")
