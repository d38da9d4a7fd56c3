"""Pixels <-> the latents the transformer sees, in OmniGen's convention: encode = (sample - shift) x scale,
decode = latents / scale + shift, where `shift` is the VAE config's `shift_factor` (None for OmniGen's SDXL VAE,
set for 16-channel VAEs such as SD3's and FLUX's).

diffusers' OmniGenPipeline ignores `shift_factor` on both sides; for a VAE without a shift (OmniGen's own) the two
agree pixel for pixel (tests/test_generate.py). With a shifted VAE ours follows OmniGen's original code, so latents
are centred as the transformer was trained on them.
"""

from __future__ import annotations

import torch


@torch.no_grad()
def vae_encode(vae, pixels: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """[B,3,H,W] in [-1,1] -> scaled latents (a posterior sample drawn with `generator`)."""
    dist = vae.encode(pixels.to(vae.device, vae.dtype)).latent_dist
    latents = dist.sample(generator) if generator is not None else dist.sample()
    shift = getattr(vae.config, "shift_factor", None)
    if shift is not None:
        latents = latents - shift
    return latents * vae.config.scaling_factor


@torch.no_grad()
def vae_decode(vae, latents: torch.Tensor) -> torch.Tensor:
    """Scaled latents -> [B,3,H,W] pixels in about [-1,1]; the inverse of vae_encode's scaling and shift."""
    latents = latents.to(vae.dtype) / vae.config.scaling_factor
    shift = getattr(vae.config, "shift_factor", None)
    if shift is not None:
        latents = latents + shift
    return vae.decode(latents, return_dict=False)[0]


@torch.no_grad()
def posterior(vae, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[B,3,H,W] in [-1,1] -> the VAE posterior's (mean, std), fp32 on the VAE's device. Each image encodes alone:
    batched convolutions differ from single ones in the last bits, and a posterior that does not depend on its
    batch-mates is what a latent cache can reproduce bit for bit (flow/latents.py)."""
    dists = [vae.encode(img[None].to(vae.device, vae.dtype)).latent_dist for img in pixels]
    return torch.cat([d.mean for d in dists]), torch.cat([d.std for d in dists])


def sample_posterior(vae_config, mean: torch.Tensor, std: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Scaled latents drawn from (mean, std) exactly as diffusers' `DiagonalGaussianDistribution.sample` draws them
    (one `randn_tensor` of the batch's shape), then shifted and scaled as vae_encode does."""
    from diffusers.utils.torch_utils import randn_tensor

    latents = mean + std * randn_tensor(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
    shift = getattr(vae_config, "shift_factor", None)
    if shift is not None:
        latents = latents - shift
    return latents * vae_config.scaling_factor


def encode_batch(vae, batch: dict, generator: torch.Generator, per_image: bool = False) -> tuple[torch.Tensor, dict]:
    """(x1, cond) of a built batch: the target latents, then the batch with `input_img_latents` for its input
    images, all drawn from `generator` in that order (the order is part of exact resume). A batch built with a
    latent cache carries the posteriors (`output_posterior`, `input_posteriors`) and needs no encoding;
    `per_image` encodes the targets one by one, so that the cached and the encoded run draw the same latents."""
    if "output_posterior" in batch:
        x1 = sample_posterior(vae.config, *batch["output_posterior"], generator)
        inputs = [sample_posterior(vae.config, mean, std, generator) for mean, std in batch["input_posteriors"]]
        return x1, dict(batch, input_img_latents=inputs)
    if per_image:
        x1 = sample_posterior(vae.config, *posterior(vae, batch["output_pixels"]), generator)
    else:
        x1 = vae_encode(vae, batch["output_pixels"], generator)
    cond = dict(batch, input_img_latents=[vae_encode(vae, pv, generator) for pv in batch["input_pixel_values"]])
    return x1, cond
