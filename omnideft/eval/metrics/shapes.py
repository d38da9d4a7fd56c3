"""`shape_iou` and `colour_error`: the shape world's exact-mask scores (omnideft/shapes/metrics.py) for any folder
of generations whose references are shape-world targets (the demo's, the retention benchmark's, `--examples` shards).

The reference says what to read: an edge map (dark background) is scored on its bright pixels, a filled drawing on
its non-background pixels, and the colour the shape should have is the reference's own (the median colour of its
shape pixels). The prediction is resized (nearest) to the reference's size.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from omnideft.eval.metrics.base import MetricBatch, PairMetric
from omnideft.shapes.metrics import colour_error, shape_iou, target_mask


def reference_kind(ref: Image.Image) -> str:
    return "edges" if np.asarray(ref.convert("L"), dtype=np.float32).mean() < 128 else "filled"


def reference_colour(ref: Image.Image, kind: str) -> tuple[int, int, int]:
    pixels = np.asarray(ref.convert("RGB"))[target_mask(ref, kind)]
    return tuple(int(v) for v in np.median(pixels, axis=0)) if len(pixels) else (0, 0, 0)


class ShapeIoU(PairMetric):
    name = "shape_iou"
    higher_is_better = True
    needs = ("ref",)
    summary = "|pred mask ∩ ref mask| / |pred mask ∪ ref mask| of shape-world drawings (1 = exact)"

    def score(self, batch: MetricBatch) -> list[float]:
        return [shape_iou(p.resize(r.size, Image.NEAREST), r, reference_kind(r)) for p, r in zip(batch.pred, batch.ref)]


class ColourError(PairMetric):
    name = "colour_error"
    higher_is_better = False
    needs = ("ref",)
    summary = "RGB distance (0-255) of the mean predicted colour where both masks agree from the reference's colour"

    def score(self, batch: MetricBatch) -> list[float]:
        out = []
        for p, r in zip(batch.pred, batch.ref):
            kind = reference_kind(r)
            out.append(colour_error(p.resize(r.size, Image.NEAREST), r, reference_colour(r, kind), kind))
        return out
