"""Fit the tiny preset's random VAE to the demo images, so generated latents decode to legible pictures.

Reconstruction MSE plus a tiny KL term, seeded; afterwards `scaling_factor` is set so the scaled latents have unit
variance (as Stable Diffusion's VAEs are calibrated), which is what the rectified-flow objective assumes.
"""

from __future__ import annotations

import math

import torch

from omnideft.families.omnigen.processor import image_to_tensor
from omnideft.progress import progress_bar


def fit_vae(vae, images: list, steps: int = 300, batch: int = 16, lr: float = 3e-3, seed: int = 0,
            progress: bool = True, min_lr_ratio: float = 1.0) -> float:
    """Train `vae` in place on PIL `images`; returns the final reconstruction MSE. With `min_lr_ratio` < 1 the
    learning rate decays (cosine) to that fraction: a constant one leaves the fit wherever its last steps threw it
    (the colours of the decoded shapes vary from seed to seed, benchmarks/small_base_bounds.py)."""
    data = torch.stack([image_to_tensor(im) for im in images])
    g = torch.Generator().manual_seed(seed)
    vae.requires_grad_(True)
    vae.train()
    opt = torch.optim.Adam(vae.parameters(), lr=lr)
    decay = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * s / max(1, steps))))
    mse = float("nan")
    for _ in progress_bar(range(steps), desc="fit tiny VAE", disable=not progress):
        x = data[torch.randint(0, len(data), (batch,), generator=g)]
        post = vae.encode(x).latent_dist
        rec = vae.decode(post.sample(g)).sample
        loss_rec = (rec - x).pow(2).mean()
        loss = loss_rec + 1e-6 * post.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        decay.step()
        mse = float(loss_rec.detach())
    vae.requires_grad_(False)
    vae.eval()
    with torch.no_grad():
        std = float(torch.cat([vae.encode(data[i : i + 64]).latent_dist.mode() for i in range(0, len(data), 64)]).std())
    vae.register_to_config(scaling_factor=1.0 / std)
    return mse
