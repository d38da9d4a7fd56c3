"""Task metrics on the shape world: held-out queries, a model's generations scored with exact masks.

Used for the small base's card (family A), the demo (family B fit, family A retention) and the retention
benchmark. The same seed gives the same queries and noise, so the numbers of different models compare. The model is
any sampler callable with OmniGenSampler's signature (this room does not import the generate room).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from PIL import Image, ImageDraw

from omnideft.progress import progress_bar
from omnideft.shapes.metrics import colour_error, shape_iou
from omnideft.shapes.tasks import TASKS, ShapeSample, make_sample

LABEL_H = 14


def heldout_samples(tasks: list[str], per_task: int, seed: int, size: int = 64) -> list[ShapeSample]:
    """`per_task` queries of each task; example counts cycle through the task's range so every count is seen."""
    rng = np.random.default_rng(seed)
    out = []
    for name in tasks:
        t = TASKS[name]
        counts = list(range(t.min_examples, t.max_examples + 1))
        out += [make_sample(t, rng, size, counts[i % len(counts)]) for i in range(per_task)]
    return out


def sampler_fn(sampler: Callable[..., Image.Image], size: int, steps: int = 20, guidance: float = 2.5,
               image_guidance: float = 1.6, seed: int = 0) -> Callable[[ShapeSample, int], Image.Image]:
    """sample, i -> generated image, seeded by the query's index (the same noise for every model)."""
    def generate(sample: ShapeSample, i: int) -> Image.Image:
        return sampler(sample.instruction, sample.images, height=size, width=size, steps=steps, guidance=guidance,
                       image_guidance=image_guidance, seed=seed + i)
    return generate


def score(generate: Callable[[ShapeSample, int], Image.Image], samples: list[ShapeSample], desc: str = "score",
          progress: bool = False) -> tuple[dict, list[Image.Image]]:
    """({task: {"iou", "colour_error", "n"}, "mean": {...over tasks}}, generated images in sample order)."""
    per_task: dict[str, list[tuple[float, float]]] = {}
    images = []
    for i, s in enumerate(progress_bar(samples, desc=desc, disable=not progress)):
        img = generate(s, i)
        images.append(img)
        per_task.setdefault(s.task, []).append((shape_iou(img, s.target, s.kind),
                                                colour_error(img, s.target, s.colour, s.kind)))
    table = {t: {"iou": float(np.mean([v[0] for v in vals])), "colour_error": float(np.mean([v[1] for v in vals])),
                 "n": len(vals)} for t, vals in per_task.items()}
    table["mean"] = {k: float(np.mean([table[t][k] for t in per_task])) for k in ("iou", "colour_error")}
    table["mean"]["n"] = len(samples)
    return table, images


RIGHT, WRONG = (30, 160, 60), (210, 40, 40)


def comparison_sheet(samples: list[ShapeSample], outputs: dict[str, list[Image.Image]], cell: int = 96,
                     marks: dict[str, list[bool]] | None = None) -> Image.Image:
    """One row per sample: its example pairs (columns aligned across rows), the query, each model's output (one
    column per entry of `outputs`, in order) and the true target. `marks` (model -> per sample): a green frame
    around an output judged right, a red one around a wrong one."""
    n_ex = max(s.n_examples for s in samples)
    labels = [f"example {k // 2 + 1} {'in' if k % 2 == 0 else 'out'}" for k in range(2 * n_ex)]
    labels += ["query", *outputs, "target"]
    sheet = Image.new("RGB", (cell * len(labels), LABEL_H + cell * len(samples)), "white")
    draw = ImageDraw.Draw(sheet)
    for c, label in enumerate(labels):
        draw.text((c * cell + 3, 1), label, fill="black")
    for r, s in enumerate(samples):
        row = [im for pair in s.examples for im in pair] + [None] * (2 * (n_ex - s.n_examples))
        row += [s.query_images[0] if s.query_images else None, *(outs[r] for outs in outputs.values()), s.target]
        for c, im in enumerate(row):
            if im is not None:
                sheet.paste(im.convert("RGB").resize((cell - 4, cell - 4), Image.NEAREST),
                            (c * cell + 2, LABEL_H + r * cell + 2))
        for k, model in enumerate(outputs):
            if marks and model in marks:
                c = 2 * n_ex + 1 + k
                draw.rectangle([c * cell, LABEL_H + r * cell, (c + 1) * cell - 1, LABEL_H + (r + 1) * cell - 1],
                               outline=RIGHT if marks[model][r] else WRONG, width=2)
    return sheet
