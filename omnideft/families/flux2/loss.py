"""FLUX.2 [klein]'s flow-matching objective, as diffusers' klein LoRA scripts train it
(examples/dreambooth/train_dreambooth_lora_flux2_klein[_img2img].py, weighting scheme "none"): latents are the VAE's
posterior mode, 2x2-patchified and batch-normalised by the VAE's running statistics (the pipeline's
`_encode_vae_image`); noise n ~ N(0, 1); sigma = timesteps[floor(u * 1000)] / 1000 with u ~ U[0, 1) over the
scheduler's training timesteps; x_s = (1 - sigma) x + sigma n; the transformer, given sigma as its timestep (the
pipeline passes timestep / 1000), the packed target tokens followed by the packed reference tokens, predicts the
velocity n - x on the target tokens. sigma = 1 is noise, as in the pipeline's schedule. Every draw (noise, then u)
comes from the run's generator.
"""

from __future__ import annotations

import torch
from diffusers import Flux2KleinPipeline


def flow_matching_loss(transformer, latents: torch.Tensor, text: torch.Tensor, text_ids: torch.Tensor,
                       references: torch.Tensor | None, reference_ids: torch.Tensor | None,
                       timesteps: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Per-sample MSE [B]. `latents` [B, C, h, w] normalised; `references` [B, N, C] packed with their ids [B, N, 4]
    (or None); `timesteps` the scheduler's training timesteps (0..1000]. Noise and u come from the CPU generator (the
    same numbers on every device), then move to the latents' device."""
    batch = latents.shape[0]
    noise = torch.randn(latents.shape, generator=generator).to(latents.device, latents.dtype)
    u = torch.rand(batch, generator=generator)
    indices = (u * len(timesteps)).long()
    sigmas = (timesteps[indices] / 1000).to(latents.device, latents.dtype)
    noisy = (1.0 - sigmas.view(-1, 1, 1, 1)) * latents + sigmas.view(-1, 1, 1, 1) * noise
    ids = Flux2KleinPipeline._prepare_latent_ids(noisy).to(latents.device)
    tokens = Flux2KleinPipeline._pack_latents(noisy)
    count = tokens.shape[1]
    all_ids = ids
    if references is not None:
        tokens = torch.cat([tokens, references.to(tokens.dtype)], dim=1)
        all_ids = torch.cat([ids, reference_ids], dim=1)
    pred = transformer(hidden_states=tokens, timestep=sigmas, guidance=None, encoder_hidden_states=text,
                       txt_ids=text_ids, img_ids=all_ids, return_dict=False)[0][:, :count]
    pred = Flux2KleinPipeline._unpack_latents_with_ids(pred, ids, latents.shape[2], latents.shape[3])
    return (pred.float() - (noise - latents).float()).pow(2).reshape(batch, -1).mean(1)
