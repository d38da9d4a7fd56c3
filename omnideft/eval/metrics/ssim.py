"""`ssim`: structural similarity (Wang et al. 2004) of the grayscale images (channel mean, as the DEFT evaluation),
computed by torchmetrics `structural_similarity_index_measure`: Gaussian window 11 x 11, sigma 1.5, K1 0.01,
K2 0.03, data range 255, mean over the valid window positions. The prediction is resized to the reference."""

from __future__ import annotations

from torchmetrics.functional.image import structural_similarity_index_measure

from omnideft.eval.metrics.base import MetricBatch, PairMetric, pixel_pairs, scatter


class Ssim(PairMetric):
    name = "ssim"
    higher_is_better = True
    needs = ("ref",)
    summary = "SSIM of the channel-mean grayscale, 11x11 Gaussian window sigma 1.5 (torchmetrics)"

    def score(self, batch: MetricBatch) -> list[float]:
        groups = []
        for idx, p, r in pixel_pairs(batch.pred, batch.ref):
            groups.append((idx, structural_similarity_index_measure(
                p.mean(dim=1, keepdim=True), r.mean(dim=1, keepdim=True), data_range=255.0, reduction="none")))
        return scatter(groups, len(batch.pred))
