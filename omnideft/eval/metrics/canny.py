"""`canny_f1` (controllability of edge-conditioned generation) and `binary_f1` (dense prediction of edge maps).

`canny_f1`: OpenCV Canny on the 8-bit RGB prediction (thresholds 100/200 by default, the ControlNet/VisualCloze
annotator setting; `--canny-thresholds`) against the condition edge map (`--cond`, binarised at half intensity), or,
without a condition, against Canny of the reference. F1 = 2·TP / (2·TP + FP + FN) over pixels (torchmetrics
`binary_f1_score`, per sample); both maps empty counts as a perfect match (1).

`binary_f1`: both images binarised at half intensity (channel mean >= 127.5), F1 over pixels: the DEFT evaluation's
F1 for predicted edge maps and masks against the ground-truth map.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
from torchmetrics.functional.classification import binary_f1_score

from omnideft.eval.metrics.base import MetricBatch, PairMetric, gray, to_float_array


def canny_edges(img, size: tuple[int, int], thresholds: tuple[int, int]) -> np.ndarray:
    arr = np.clip(to_float_array(img, size).round(), 0, 255).astype(np.uint8)
    return cv2.Canny(arr, thresholds[0], thresholds[1]) > 0


def binarise(img, size: tuple[int, int]) -> np.ndarray:
    return gray(to_float_array(img, size)) >= 127.5


def pixel_f1(pred_maps: list[np.ndarray], target_maps: list[np.ndarray]) -> list[float]:
    """Per-pair F1, batched over pairs of equal size."""
    out = [float("nan")] * len(pred_maps)
    groups: dict[tuple, list[int]] = {}
    for i, t in enumerate(target_maps):
        groups.setdefault(t.shape, []).append(i)
    for idx in groups.values():
        p = torch.from_numpy(np.stack([pred_maps[i] for i in idx])).long()
        t = torch.from_numpy(np.stack([target_maps[i] for i in idx])).long()
        f1 = binary_f1_score(p, t, multidim_average="samplewise", zero_division=1.0)
        for i, v in zip(idx, f1.reshape(-1).tolist()):
            out[i] = float(v)
    return out


class CannyF1(PairMetric):
    name = "canny_f1"
    settings = ("canny_thresholds",)
    higher_is_better = True
    needs = ("cond",)
    summary = "F1 of Canny(pred) vs the condition edge map (or Canny(ref)), OpenCV + torchmetrics"

    def score(self, batch: MetricBatch) -> list[float]:
        th = tuple(self.options.canny_thresholds)
        preds, targets = [], []
        for pred, cond, ref in zip(batch.pred, batch.cond, batch.ref):
            target_img = cond if cond is not None else ref
            size = target_img.size
            preds.append(canny_edges(pred, size, th))
            targets.append(binarise(cond, size) if cond is not None else canny_edges(ref, size, th))
        return pixel_f1(preds, targets)


class BinaryF1(PairMetric):
    name = "binary_f1"
    higher_is_better = True
    needs = ("ref",)
    summary = "F1 of pred and ref binarised at half intensity (DEFT's F1 for edge maps and masks)"

    def score(self, batch: MetricBatch) -> list[float]:
        return pixel_f1([binarise(p, r.size) for p, r in zip(batch.pred, batch.ref)],
                        [binarise(r, r.size) for r in batch.ref])
