"""The metric interface: what a metric reads, which direction is better, and how it scores a batch.

A metric is one class in one file, listed once in `omnideft/eval/metrics/__init__.py`. Two kinds:
`PairMetric` scores every prediction on its own (one row per image); `SetMetric` compares two sets of images
(FID) and gives one number per set. Both take a `MetricBatch`; the scorer (omnideft/eval/scoring.py), the CLI and the
bench protocols only ever ask the registry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch
from PIL import Image

# What a metric may read besides the prediction. "cond" falls back to the reference when no condition is given.
NEEDS = ("ref", "prompt", "cond")


@dataclass
class MetricOptions:
    """Models, weights and settings of every metric; each field has a CLI flag (omnideft eval / bench)."""

    device: str = "cpu"
    batch_size: int = 16
    clip_model: str = "openai/clip-vit-base-patch32"
    dino_model: str = "facebook/dino-vits8"
    dinov2_model: str = "facebook/dinov2-small"
    depth_model: str = "depth-anything/Depth-Anything-V2-Small-hf"
    aesthetic_model: str | None = None  # LAION aesthetic MLP as safetensors (docs/eval.md: how to convert)
    aesthetic_clip_model: str = "openai/clip-vit-large-patch14"
    fid_weights: str | None = None  # FID Inception weights as safetensors
    fid_features: str = "inception"  # inception | dinov2 (Fréchet distance in DINOv2 space, FD-DINOv2)
    canny_thresholds: tuple[int, int] = (100, 200)


@dataclass
class MetricBatch:
    """Aligned lists: entry i of every list belongs to prediction i. Absent inputs are None."""

    pred: list[Image.Image]
    ref: list[Image.Image | None] = field(default_factory=list)
    prompt: list[str | None] = field(default_factory=list)
    cond: list[Image.Image | None] = field(default_factory=list)

    def __post_init__(self):
        n = len(self.pred)
        self.ref = self.ref or [None] * n
        self.prompt = self.prompt or [None] * n
        self.cond = self.cond or [None] * n


class Metric:
    name: ClassVar[str]
    higher_is_better: ClassVar[bool]
    needs: ClassVar[tuple[str, ...]] = ()  # subset of NEEDS; "cond" is satisfied by a reference too
    summary: ClassVar[str] = ""  # one line: the formula, for --help and the tables
    per_image: ClassVar[bool] = True
    settings: ClassVar[tuple[str, ...]] = ()  # MetricOptions fields that change its values (models, thresholds)

    def __init__(self, options: MetricOptions):
        self.options = options

    @classmethod
    def settings_of(cls, options: MetricOptions) -> dict:
        return {k: getattr(options, k) for k in cls.settings}


class PairMetric(Metric):
    def score(self, batch: MetricBatch) -> list[float]:
        """One value per prediction."""
        raise NotImplementedError


class SetMetric(Metric):
    per_image = False

    def update(self, images: list[Image.Image], real: bool) -> None:
        """Add references (real=True) or predictions (real=False) to the two sets."""
        raise NotImplementedError

    def compute(self) -> float:
        raise NotImplementedError


def to_float_array(img: Image.Image, size: tuple[int, int] | None = None) -> np.ndarray:
    """H x W x 3 float64 in [0, 255]; resized (bicubic) to `size` = (width, height) when given and different.
    Float from the start: differences of uint8 arrays wrap around (the DEFT evaluation code's bug)."""
    img = img.convert("RGB")
    if size is not None and img.size != size:
        img = img.resize(size, Image.BICUBIC)
    return np.asarray(img, dtype=np.float64)


def gray(arr: np.ndarray) -> np.ndarray:
    """Channel mean of an H x W x 3 array (the grayscale the DEFT evaluation uses)."""
    return arr.mean(axis=-1)


def pixel_pairs(preds: list[Image.Image], refs: list[Image.Image]) -> list[tuple[list[int], torch.Tensor,
                                                                                torch.Tensor]]:
    """Group pairs by reference size (predictions are resized to their reference) and stack each group into
    (indices, pred B x 3 x H x W, ref B x 3 x H x W) float64 tensors in [0, 255], so pixel metrics run batched."""
    groups: dict[tuple[int, int], list[int]] = {}
    for i, ref in enumerate(refs):
        groups.setdefault(ref.size, []).append(i)
    out = []
    for size, idx in groups.items():
        p = np.stack([to_float_array(preds[i], size) for i in idx]).transpose(0, 3, 1, 2)
        r = np.stack([to_float_array(refs[i], size) for i in idx]).transpose(0, 3, 1, 2)
        out.append((idx, torch.from_numpy(p), torch.from_numpy(r)))
    return out


def scatter(groups: list[tuple[list[int], torch.Tensor]], n: int) -> list[float]:
    """Per-group values back into prediction order."""
    values = [float("nan")] * n
    for idx, vals in groups:
        for i, v in zip(idx, vals.tolist()):
            values[i] = float(v)
    return values
