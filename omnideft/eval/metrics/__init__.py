"""Image metrics and their registry. Adding a metric = its file + one line in METRICS.

Every metric's formula, library and model are in its module docstring and in docs/eval.md.
"""

from __future__ import annotations

from omnideft.errors import UserError
from omnideft.eval.metrics.aesthetic import Aesthetic
from omnideft.eval.metrics.base import Metric, MetricBatch, MetricOptions, PairMetric, SetMetric
from omnideft.eval.metrics.canny import BinaryF1, CannyF1
from omnideft.eval.metrics.clip import ClipImage, ClipText
from omnideft.eval.metrics.depth import DepthRmse
from omnideft.eval.metrics.dino import DinoV1, DinoV2
from omnideft.eval.metrics.fid import Fid
from omnideft.eval.metrics.psnr import Psnr
from omnideft.eval.metrics.rmse import Rmse
from omnideft.eval.metrics.shapes import ColourError, ShapeIoU
from omnideft.eval.metrics.sharpness import Sharpness
from omnideft.eval.metrics.ssim import Ssim

METRICS: dict[str, type[Metric]] = {m.name: m for m in (
    ClipImage,
    ClipText,
    DinoV1,
    DinoV2,
    Ssim,
    Psnr,
    Rmse,
    Fid,
    CannyF1,
    BinaryF1,
    DepthRmse,
    Sharpness,
    Aesthetic,
    ShapeIoU,
    ColourError,
)}

__all__ = ["METRICS", "Metric", "MetricBatch", "MetricOptions", "PairMetric", "SetMetric", "metric_class",
           "parse_metrics"]


def metric_class(name: str) -> type[Metric]:
    if name not in METRICS:
        raise UserError(f"unknown metric {name!r}; known: {', '.join(METRICS)}")
    return METRICS[name]


def parse_metrics(text: str) -> list[str]:
    """'clip_i, dino_v1' -> ['clip_i', 'dino_v1'], each checked against the registry, duplicates dropped."""
    names = list(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    if not names:
        raise UserError("--metrics is empty; known: " + ", ".join(METRICS))
    for n in names:
        metric_class(n)
    return names
