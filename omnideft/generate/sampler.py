"""OmniGen's sampler: rows [conditional, negative, image-only] in one batch, InstructPix2Pix-style CFG,
Euler steps of the rectified flow with diffusers' FlowMatchEulerDiscreteScheduler (t = 0 noise -> 1 data).

Given the same weights, seed and settings it reproduces diffusers' OmniGenPipeline pixel for pixel: initial
latents come from a generator seeded with `seed`, and the input-image VAE samples from a second one with the same
seed (diffusers draws those from torch's global RNG). Pixels <-> latents go through flow/vae.py, the same
functions training uses; they honour a VAE's `shift_factor`, which diffusers' pipeline ignores (flow/vae.py).
"""

from __future__ import annotations

import numpy as np
import torch
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image

from omnideft.flow.vae import vae_decode, vae_encode
from omnideft.progress import progress_bar
from omnideft.prompts import NEGATIVE_PROMPT, OmniGenProcessor, collate_prompts


class OmniGenSampler:
    def __init__(self, transformer, vae, tokenizer, scheduler, max_input_image_size: int = 1024):
        self.transformer = transformer
        self.vae = vae
        self.scheduler = scheduler
        self.processor = OmniGenProcessor(tokenizer, max_image_size=max_input_image_size)
        self.vae_scale_factor = 2 ** (len(vae.config.block_out_channels) - 1)

    @torch.no_grad()
    def __call__(self, instruction: str, images: list[Image.Image] | None = None, *, height: int | None = None,
                 width: int | None = None, steps: int = 50, guidance: float = 2.5, image_guidance: float = 1.6,
                 seed: int = 0, negative_prompt: str = NEGATIVE_PROMPT, progress: bool = False,
                 camera=None, on_step=None) -> Image.Image:
        """`camera`: an 11-number vector for the `<cam>` token of a model with learned camera conditioning
        (omnideft/camera); the instruction must then contain `<cam>` (CameraPrompt.instruction).
        `on_step(i)` is called after step i (1-based), e.g. for a progress bar in a web page."""
        images = [im.convert("RGB") for im in (images or [])]
        cond = self.processor.encode(instruction, images)
        rows = [cond, self.processor.encode(negative_prompt)]
        if images:
            rows.append(self.processor.encode_image_only(images))
        if height is None or width is None:
            h0, w0 = (cond.pixel_values[0].shape[-2:] if images else (1024, 1024))
            height, width = height or int(h0), width or int(w0)
        step = self.vae_scale_factor * 2
        height, width = height // step * step, width // step * step
        batch = collate_prompts(rows, (height, width))
        device = next(self.transformer.parameters()).device
        dtype = next(self.transformer.parameters()).dtype

        vae_gen = torch.Generator().manual_seed(seed)
        input_latents = [vae_encode(self.vae, pv, vae_gen) for pv in batch["input_pixel_values"]]
        f = self.vae_scale_factor
        shape = (1, self.transformer.config.in_channels, height // f, width // f)
        latents = randn_tensor(shape, generator=torch.Generator().manual_seed(seed), device=device,
                               dtype=torch.float32)
        sigmas = np.linspace(1, 0, steps + 1)[:steps]
        self.scheduler.set_timesteps(sigmas=sigmas, device=device)
        n_rows = len(rows)
        extra = {"camera": torch.tensor(camera, dtype=torch.float32, device=device)} if camera is not None else {}
        for i, t in enumerate(progress_bar(self.scheduler.timesteps, desc="sample", disable=not progress), 1):
            model_in = torch.cat([latents] * n_rows).to(dtype)
            v = self.transformer(
                hidden_states=model_in, timestep=t.expand(n_rows), input_ids=batch["input_ids"].to(device),
                input_img_latents=input_latents, input_image_sizes=batch["input_image_sizes"],
                attention_mask=batch["attention_mask"].to(device), position_ids=batch["position_ids"].to(device),
                return_dict=False, **extra,
            )[0]
            if n_rows == 3:
                v_c, v_u, v_i = v.chunk(3)
                v = v_u + image_guidance * (v_i - v_u) + guidance * (v_c - v_i)
            else:
                v_c, v_u = v.chunk(2)
                v = v_u + guidance * (v_c - v_u)
            latents = self.scheduler.step(v, t, latents, return_dict=False)[0]
            if on_step is not None:
                on_step(i)
        return self._decode(latents)

    def _decode(self, latents: torch.Tensor) -> Image.Image:
        arr = (vae_decode(self.vae, latents) / 2 + 0.5).clamp(0, 1)[0].permute(1, 2, 0).float().cpu().numpy()
        return Image.fromarray((arr * 255).round().astype("uint8"))
