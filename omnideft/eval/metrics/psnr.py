"""`psnr`: peak signal-to-noise ratio 10·log10(255² / MSE) in dB over RGB pixels (torchmetrics
`peak_signal_noise_ratio`, data range 255). Identical images give +inf."""

from __future__ import annotations

from torchmetrics.functional.image import peak_signal_noise_ratio

from omnideft.eval.metrics.base import MetricBatch, PairMetric, pixel_pairs, scatter


class Psnr(PairMetric):
    name = "psnr"
    higher_is_better = True
    needs = ("ref",)
    summary = "10 log10(255^2 / MSE) dB, RGB (torchmetrics)"

    def score(self, batch: MetricBatch) -> list[float]:
        groups = [(idx, peak_signal_noise_ratio(p, r, data_range=255.0, reduction="none", dim=(1, 2, 3)))
                  for idx, p, r in pixel_pairs(batch.pred, batch.ref)]
        return scatter(groups, len(batch.pred))
