"""Examples -> model inputs: prompt encoding with `<cfg>` condition dropout, collation, VAE latents."""

from __future__ import annotations

import random

import torch

from omnideft.data.shards import Example
from omnideft.prompts import CFG_PROMPT, OmniGenProcessor, collate_prompts, crop_image


class BatchBuilder:
    def __init__(self, processor: OmniGenProcessor, condition_dropout: float, seed: int, pad_token_id: int = 2):
        self.processor = processor
        self.condition_dropout = condition_dropout
        self.seed = seed
        self.pad_token_id = pad_token_id

    def output_size(self, ex: Example) -> tuple[int, int]:
        w, h = crop_image(ex.output, self.processor.max_image_size).size
        return h, w

    def __call__(self, examples: list[Example]) -> dict:
        prompts = []
        for ex in examples:
            # Seeded by the example's place in the training order: the same decision after a resume.
            if random.Random(f"cfg-dropout-{self.seed}-{ex.order_id or ex.key}").random() < self.condition_dropout:
                # OmniGen drops text and image conditions together; the model learns the unconditional velocity.
                prompts.append(self.processor.encode(CFG_PROMPT))
            else:
                prompts.append(self.processor.encode(ex.instruction, ex.inputs))
        hw = self.output_size(examples[0])
        batch = collate_prompts(prompts, hw, self.pad_token_id)
        batch["output_pixels"] = torch.stack([self.processor.process_image(ex.output) for ex in examples])
        batch["tasks"] = [ex.task for ex in examples]
        return batch


@torch.no_grad()
def vae_encode(vae, pixels: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """[B,3,H,W] in [-1,1] -> scaled latents, OmniGen's convention (sample, optional shift, times scale)."""
    dist = vae.encode(pixels.to(vae.device, vae.dtype)).latent_dist
    latents = dist.sample(generator) if generator is not None else dist.sample()
    shift = getattr(vae.config, "shift_factor", None)
    if shift is not None:
        latents = latents - shift
    return latents * vae.config.scaling_factor


def to_device(batch: dict, device) -> dict:
    out = dict(batch)
    for k in ("input_ids", "attention_mask", "position_ids", "output_pixels"):
        out[k] = batch[k].to(device)
    return out
