"""CameraEncoder: the 11-number camera vector -> one token embedding (a small MLP).

Features: f, cx - 1/2, cy - 1/2, k, the rotation as its 6D form (the first two columns of R: continuous, unlike a
quaternion whose sign flips at qw = 0) and t / s: 13 numbers, optionally with sin/cos Fourier features so that a
small network separates nearby cameras. The output layer starts at zero, so at step 0 the `<cam>` token keeps its
plain embedding and the model is exactly the base.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from omnideft.camera.record import VECTOR_SIZE

FEATURES = 13


def rotation_6d(q: torch.Tensor) -> torch.Tensor:
    """[..., 4] quaternions (w, x, y, z) -> [..., 6]: the first two columns of the rotation matrix."""
    q = q / q.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    w, x, y, z = q.unbind(-1)
    col0 = torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y + w * z), 2 * (x * z - w * y)], dim=-1)
    col1 = torch.stack([2 * (x * y - w * z), 1 - 2 * (x * x + z * z), 2 * (y * z + w * x)], dim=-1)
    return torch.cat([col0, col1], dim=-1)


def camera_features(vector: torch.Tensor) -> torch.Tensor:
    """[B, 11] camera vectors -> [B, 13] encoder features."""
    intr = vector[..., :4] - vector.new_tensor([0.0, 0.5, 0.5, 0.0])
    return torch.cat([intr, rotation_6d(vector[..., 4:8]), vector[..., 8:11]], dim=-1)


class CameraEncoder(nn.Module):
    def __init__(self, out_dim: int, hidden: int = 256, layers: int = 2, fourier_bands: int = 4):
        super().__init__()
        self.fourier_bands = fourier_bands
        dims = [FEATURES * (1 + 2 * fourier_bands)] + [hidden] * layers
        blocks: list[nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:]):
            blocks += [nn.Linear(a, b), nn.SiLU()]
        self.mlp = nn.Sequential(*blocks)
        self.out = nn.Linear(dims[-1], out_dim)
        nn.init.zeros_(self.out.weight)  # zero output: the model is unchanged at step 0
        nn.init.zeros_(self.out.bias)

    def forward(self, vector: torch.Tensor) -> torch.Tensor:
        if vector.shape[-1] != VECTOR_SIZE:
            raise ValueError(f"camera vectors must have {VECTOR_SIZE} numbers, got shape {tuple(vector.shape)}")
        x = camera_features(vector.to(self.out.weight.dtype))
        if self.fourier_bands:
            freqs = math.pi * 2.0 ** torch.arange(self.fourier_bands, device=x.device, dtype=x.dtype)
            angles = (x.unsqueeze(-1) * freqs).flatten(-2)
            x = torch.cat([x, angles.sin(), angles.cos()], dim=-1)
        return self.out(self.mlp(x))
