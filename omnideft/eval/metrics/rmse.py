"""`rmse`: root-mean-square pixel error, sqrt(mean over pixels and RGB channels of (pred - ref)^2), in 8-bit
grey levels (0-255). The prediction is resized (bicubic) to the reference's size. Float arithmetic throughout."""

from __future__ import annotations

from omnideft.eval.metrics.base import MetricBatch, PairMetric, pixel_pairs, scatter


class Rmse(PairMetric):
    name = "rmse"
    higher_is_better = False
    needs = ("ref",)
    summary = "sqrt(mean((pred - ref)^2)) over RGB pixels, 0-255 scale"

    def score(self, batch: MetricBatch) -> list[float]:
        groups = [(idx, (p - r).pow(2).mean(dim=(1, 2, 3)).sqrt()) for idx, p, r in pixel_pairs(batch.pred, batch.ref)]
        return scatter(groups, len(batch.pred))
