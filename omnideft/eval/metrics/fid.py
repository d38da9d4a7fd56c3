"""`fid`: Fréchet distance between the feature distributions of the predictions and the references,
||mu_p - mu_r||^2 + Tr(S_p + S_r - 2 (S_p S_r)^(1/2)), computed by torchmetrics `FrechetInceptionDistance` with the
feature network passed in:

* `--fid-features inception` (default): the FID Inception-v3 (omnideft/eval/metrics/inception.py) with
  `--fid-weights FILE.safetensors`, converted once from torch-fidelity's / pytorch-fid's published weights;
* `--fid-features dinov2`: CLS features of `--dinov2-model` (FD-DINOv2, Stein et al. 2023), no extra weights.

One number per set, not per image; it needs at least 2 images on each side and is noisy below a few thousand.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance

from omnideft.errors import UserError
from omnideft.eval.metrics.base import SetMetric
from omnideft.eval.metrics.dino import DinoEncoder
from omnideft.eval.metrics.inception import FIDInceptionV3
from omnideft.eval.metrics.weights import read_weights

FEATURES = ("inception", "dinov2")


class DinoFeatures(nn.Module):
    """uint8 N x 3 x H x W -> DINOv2 CLS features, so torchmetrics can drive it like the Inception network."""

    def __init__(self, encoder: DinoEncoder):
        super().__init__()
        self.encoder = encoder
        self.num_features = encoder.model.config.hidden_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        images = [Image.fromarray(a) for a in x.permute(0, 2, 3, 1).cpu().numpy()]
        pixels = self.encoder.processor(images=images, return_tensors="pt")["pixel_values"]
        return self.encoder.model(pixel_values=pixels.to(self.encoder.device)).last_hidden_state[:, 0].float()


def uint8_batches(images: list[Image.Image]) -> list[torch.Tensor]:
    """Images grouped by size into uint8 N x 3 x H x W tensors."""
    groups: dict[tuple[int, int], list[np.ndarray]] = {}
    for im in images:
        groups.setdefault(im.size, []).append(np.asarray(im.convert("RGB"), dtype=np.uint8))
    return [torch.from_numpy(np.stack(g)).permute(0, 3, 1, 2).contiguous() for g in groups.values()]


class Fid(SetMetric):
    name = "fid"
    settings = ("fid_features", "fid_weights", "dinov2_model")
    higher_is_better = False
    needs = ("ref",)
    summary = "Fréchet distance of Inception-v3 pool features (or DINOv2 CLS), predictions vs references"

    def __init__(self, options):
        super().__init__(options)
        if options.fid_features == "inception":
            path = options.fid_weights
            network = FIDInceptionV3.from_state_dict(read_weights(path, "--fid-weights"), path)
        elif options.fid_features == "dinov2":
            network = DinoFeatures(DinoEncoder("Dinov2Model", options.dinov2_model, "--dinov2-model",
                                               options.device, "dinov2"))
        else:
            raise UserError(f"--fid-features {options.fid_features!r}: expected one of {', '.join(FEATURES)}")
        self.fid = FrechetInceptionDistance(feature=network.to(options.device)).to(options.device)

    @torch.no_grad()
    def update(self, images: list[Image.Image], real: bool) -> None:
        for x in uint8_batches(images):
            self.fid.update(x.to(self.options.device), real=real)

    def compute(self) -> float:
        if min(int(self.fid.real_features_num_samples), int(self.fid.fake_features_num_samples)) < 2:
            return float("nan")  # undefined for fewer than 2 images per side
        return max(0.0, float(self.fid.compute()))  # a distance: tiny negatives are float round-off
