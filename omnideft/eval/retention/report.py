"""The gauge's pictures, drawn with PIL (no plotting dependency): a grid of the base's and the adapted model's
answers side by side per validation, and drift (and task IoU, where the probes have targets) against steps."""

from __future__ import annotations

from PIL import Image, ImageDraw

LABEL_H = 14
DRIFT, IOU, LIMIT = (200, 60, 40), (40, 90, 200), (150, 150, 150)


def answer_grid(base: list[Image.Image], adapted: list[Image.Image], probes: list, drifts: list[float],
                step: int) -> Image.Image:
    """One row per (probe, seed): base | adapted at `step` | the target where the probe has one; each row says its
    drift."""
    side = min(256, max(64, *(im.width for im in base)))
    targets = any(p.target is not None for p in probes)
    labels = ["base", f"step {step}", *(["target"] if targets else [])]
    sheet = Image.new("RGB", (side * len(labels), LABEL_H + (side + LABEL_H) * len(base)), "white")
    draw = ImageDraw.Draw(sheet)
    for c, label in enumerate(labels):
        draw.text((c * side + 3, 1), label, fill="black")
    for r, (b, a, probe, d) in enumerate(zip(base, adapted, probes, drifts)):
        top = LABEL_H + r * (side + LABEL_H)
        for c, im in enumerate((b, a, probe.target if targets else None)):
            if im is not None:
                sheet.paste(im.convert("RGB").resize((side - 4, side - 4), Image.NEAREST), (c * side + 2, top + 2))
        if d is not None:
            draw.text((3, top + side), f"drift {d:.4f}", fill="black")
    return sheet


def plot(history: list[dict], max_drift: float | None, width: int = 640, height: int = 360) -> Image.Image:
    """Drift per validation (red, left axis from 0 to the largest drift or the limit) and IoU (blue, 0..1) when
    measured; the limit as a grey line."""
    return compare_plot({"": history}, max_drift, width, height)


COLOURS = ((200, 60, 40), (40, 90, 200), (30, 150, 60), (150, 60, 170))  # one per run in compare_plot


def compare_plot(runs: dict[str, list[dict]], max_drift: float | None = None, width: int = 640,
                 height: int = 360) -> Image.Image:
    """The gauge's histories of several runs over steps (the demo: DEFT vs LoRA): per run its drift (left axis,
    from 0 to the largest drift or the limit) as a line with dots and its task IoU (right axis, 0..1) as a line with
    squares. One unnamed run (the trainer's own plot) keeps drift red and IoU blue."""
    img = Image.new("RGB", (width, height), "white")
    d = ImageDraw.Draw(img)
    m = 45
    d.rectangle([m, m, width - m, height - m], outline="black")
    histories = [h for h in runs.values() if h]
    has = {key: any(r.get(key) is not None for h in histories for r in h) for key in ("drift", "iou")}
    single = list(runs) == [""]
    parts = [f"drift ({'red, ' if single else 'dots, '}left)" if has["drift"] or not has["iou"] else "",
             f"task IoU ({'blue, ' if single else 'squares, '}right, 0..1)" if has["iou"] else ""]
    d.text((m, 10), "retention: " + ", ".join(p for p in parts if p), fill="black")
    if not histories:
        return img
    steps = [r["step"] for h in histories for r in h]
    lo_s, hi_s = min(0, *steps), max(steps) or 1
    top = max([r["drift"] for h in histories for r in h if r.get("drift") is not None]
              + ([max_drift] if max_drift else []) + [1e-6]) * 1.1

    def xy(step, value, scale):
        return (m + (step - lo_s) / (hi_s - lo_s or 1) * (width - 2 * m),
                height - m - value / scale * (height - 2 * m))

    if max_drift is not None:
        d.line([xy(lo_s, max_drift, top), xy(hi_s, max_drift, top)], fill=LIMIT, width=1)
        d.text((width - m - 90, xy(0, max_drift, top)[1] - 14), f"max_drift {max_drift:g}", fill=LIMIT)
    for n, (name, history) in enumerate(runs.items()):
        for key, scale, square in (("drift", top, False), ("iou", 1.0, True)):
            colour = (DRIFT if key == "drift" else IOU) if single else COLOURS[n % len(COLOURS)]
            points = [xy(r["step"], r[key], scale) for r in history if r.get(key) is not None]
            if len(points) > 1:
                d.line(points, fill=colour, width=2)
            for x, y in points:
                (d.rectangle if square else d.ellipse)([x - 3, y - 3, x + 3, y + 3], fill=colour)
        if not single:
            d.text((m + 8, height - m - 14 * (len(runs) - n)), name, fill=COLOURS[n % len(COLOURS)])  # bottom left
    if has["drift"]:
        d.text((4, m - 6), f"{top:.3g}", fill=DRIFT if single else "black")
        d.text((4, height - m - 6), "0", fill=DRIFT if single else "black")
    if has["iou"]:
        d.text((width - m + 4, m - 6), "1", fill=IOU if single else "black")
        d.text((width - m + 4, height - m - 6), "0", fill=IOU if single else "black")
    d.text((m, height - m + 8), str(lo_s), fill="black")
    d.text((width - m - 40, height - m + 8), f"step {hi_s}", fill="black")
    return img
