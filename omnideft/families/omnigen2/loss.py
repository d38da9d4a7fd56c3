"""OmniGen2's flow-matching objective, as its published training configuration runs it (`transport:` snr_type
lognorm, do_shift, dynamic_time_shift, time_shift_version v1; linear path): t = sigmoid(n), n ~ N(0, 1), shifted
per sample by mu = 0.5 + (tokens - 256) * (1.15 - 0.5) / (4096 - 256) where tokens are the target's 2x2 patches
(t' = 1 - e^mu / (e^mu + 1 / (1 - t) - 1)); x_t = t x1 + (1 - t) x0; the target velocity is x1 - x0.
t = 0 is noise, t = 1 is data, as in OmniGen v1 (families/omnigen/loss.py).
"""

from __future__ import annotations

import torch

BASE_SHIFT, MAX_SHIFT = 0.5, 1.15
BASE_TOKENS, MAX_TOKENS = 256, 4096


def shift_mu(tokens: int) -> float:
    return BASE_SHIFT + (tokens - BASE_TOKENS) * (MAX_SHIFT - BASE_SHIFT) / (MAX_TOKENS - BASE_TOKENS)


def sample_times(latents: list[torch.Tensor], generator: torch.Generator) -> torch.Tensor:
    """One t per target latent [C, H, W], logit-normal then shifted by its token count."""
    t = torch.sigmoid(torch.randn(len(latents), generator=generator))
    mu = torch.tensor([shift_mu((x.shape[-2] // 2) * (x.shape[-1] // 2)) for x in latents])
    s = 1 - t
    return 1 - torch.exp(mu) / (torch.exp(mu) + (1 / s - 1))


def flow_matching_loss(transformer, latents: list[torch.Tensor], text: torch.Tensor, text_mask: torch.Tensor,
                       refs: list[list[torch.Tensor] | None] | None, generator: torch.Generator) -> torch.Tensor:
    """Per-sample MSE [B] between the predicted and the target velocity. Noise and t come from the CPU generator
    (the same numbers on every device), then move to the latents' device."""
    noise = [torch.randn(x.shape, generator=generator).to(x.device, x.dtype) for x in latents]
    t = sample_times(latents, generator).to(latents[0].device)  # after the noise, in the published order
    noisy = [t[i] * x1 + (1 - t[i]) * x0 for i, (x0, x1) in enumerate(zip(noise, latents))]
    pred = transformer(noisy, t.to(latents[0].dtype), text, text_mask, ref_image_hidden_states=refs)
    return torch.stack([(p.float() - (x1 - x0).float()).pow(2).mean() for p, x0, x1 in zip(pred, noise, latents)])
