"""OmniGen's rectified-flow objective. t = 0 is noise, t = 1 is data; the model predicts u = x1 - x0."""

from __future__ import annotations

import torch


def sample_timesteps(batch: int, generator: torch.Generator) -> torch.Tensor:
    """Logit-normal t = sigmoid(n), n ~ N(0, 1), one per sample (OmniGen's `sample_timestep`)."""
    return torch.sigmoid(torch.randn(batch, generator=generator))


def rectified_flow_loss(transformer, x1: torch.Tensor, cond: dict, generator: torch.Generator) -> torch.Tensor:
    """Per-sample MSE between predicted and target velocity. Noise is drawn on the CPU generator for
    reproducibility across devices, then moved to x1's device. `cond["camera"]` ([B, 11]), when present, goes to the
    camera conditioning's hook as the extra `camera=` keyword (omnideft/camera/conditioning.py)."""
    t = sample_timesteps(x1.shape[0], generator)
    x0 = torch.randn(x1.shape, generator=generator)
    t, x0 = t.to(x1.device), x0.to(x1.device, x1.dtype)
    tb = t.view(-1, 1, 1, 1)
    extra = {"camera": cond["camera"]} if cond.get("camera") is not None else {}
    xt = tb * x1 + (1 - tb) * x0
    pred = transformer(
        hidden_states=xt,
        timestep=t,
        input_ids=cond["input_ids"],
        input_img_latents=cond["input_img_latents"],
        input_image_sizes=cond["input_image_sizes"],
        attention_mask=cond["attention_mask"],
        position_ids=cond["position_ids"],
        return_dict=False,
        **extra,
    )[0]
    return (pred.float() - (x1 - x0).float()).pow(2).mean(dim=(1, 2, 3))
