"""`sharpness`: variance of the Laplacian of the grayscale prediction (OpenCV `Laplacian`, 3 x 3 aperture, float64,
0-255 grey levels). Needs no reference. Higher = more high-frequency detail (noise raises it too)."""

from __future__ import annotations

import cv2

from omnideft.eval.metrics.base import MetricBatch, PairMetric, gray, to_float_array


class Sharpness(PairMetric):
    name = "sharpness"
    higher_is_better = True
    summary = "var(Laplacian(gray(pred))), OpenCV, 0-255 scale"

    def score(self, batch: MetricBatch) -> list[float]:
        return [float(cv2.Laplacian(gray(to_float_array(img)), cv2.CV_64F).var()) for img in batch.pred]
