"""OmniGen2's sampler: the instruction through the MLLM, reference images as VAE latents, up to three transformer
passes per step (text + images, empty prompt + images, empty prompt alone) combined with the text and image
guidance scales inside the guidance step range, Euler steps on the dynamically shifted time grid.

Given the same weights, seed and settings it reproduces the published `OmniGen2Pipeline` (with either scheduler)
pixel for pixel: the initial noise comes from a generator seeded with `seed` and the reference images' VAE samples
from a second generator with the same seed (the published pipeline draws those from torch's global RNG, seeded the
same way in tests/test_omnigen2_exactness.py).
"""

from __future__ import annotations

import torch
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image

from omnideft.errors import UserError
from omnideft.families.omnigen2.instruction import omnigen2_instruction
from omnideft.families.omnigen2.model import check_reference_images
from omnideft.families.omnigen2.model.latents import (
    decode_latent,
    encode_latent,
    fitted_size,
    image_to_pixels,
    pixels_to_images,
)
from omnideft.families.omnigen2.model.prompt import NEGATIVE_PROMPT, encode_prompts
from omnideft.families.omnigen2.model.scheduler import SCHEDULERS
from omnideft.progress import progress_bar
from omnideft.prompts.tags import TAG


class OmniGen2Sampler:
    def __init__(self, transformer, vae, mllm, tokenizer, scheduler, max_pixels: int = 1024 * 1024,
                 max_input_side: int = 1024):
        self.transformer, self.vae, self.mllm = transformer, vae, mllm
        self.tokenizer, self.scheduler = tokenizer, scheduler
        self.max_pixels, self.max_input_side = max_pixels, max_input_side
        self.vae_scale_factor = 2 ** (len(vae.config.block_out_channels) - 1)

    @classmethod
    def from_components(cls, components, **kw) -> "OmniGen2Sampler":
        c = components
        return cls(c.transformer, c.vae, c.mllm, c.tokenizer, c.scheduler, **kw)

    def _velocity(self, latents, t, text, mask, refs):
        timestep = t.expand(latents.shape[0]).to(latents.dtype)
        return self.transformer(latents, timestep, text, mask, ref_image_hidden_states=refs)

    def __call__(self, instruction: str, images: list[Image.Image] | None = None, **settings) -> Image.Image:
        """One 8-bit image; settings as for `pixels`."""
        return pixels_to_images(self.pixels(instruction, images, **settings))[0]

    @torch.no_grad()
    def pixels(self, instruction: str, images: list[Image.Image] | None = None, *, height: int = 1024,
               width: int = 1024, steps: int = 50, text_guidance: float = 5.0, image_guidance: float = 2.0,
               cfg_range: tuple[float, float] = (0.0, 1.0), seed: int = 0, negative_prompt: str = NEGATIVE_PROMPT,
               align_to_reference: bool = True, scheduler: str = "euler", progress: bool = False,
               on_step=None) -> torch.Tensor:
        """One image as [1, 3, H, W] in [-1, 1] (not clamped); defaults are the published inference script's;
        `scheduler` is "euler" or "dpmsolver++". With exactly one reference image and `align_to_reference`, the
        output takes its size (as the published pipeline does); otherwise height x width within `max_pixels`,
        floored to 16 px. `<img><|image_k|></img>` placeholders (an in-context prompt from prompts/in_context.py)
        become "the k-th image", image k the k-th reference. `on_step(i)` is called after step i (1-based)."""
        images = list(images or [])
        check_reference_images(len(images))
        if scheduler not in SCHEDULERS:
            raise UserError(f"scheduler {scheduler!r} is not one of {', '.join(SCHEDULERS)}")
        if TAG.search(instruction):  # shard / in-context style (prompts/in_context.py): OmniGen2's wording
            instruction = omnigen2_instruction(instruction, len(images))
        solver = SCHEDULERS[scheduler](dynamic_time_shift=self.scheduler.config.dynamic_time_shift)
        device = next(self.transformer.parameters()).device
        text, mask = encode_prompts(self.mllm, self.tokenizer, [instruction], device=device)
        use_text_cfg = text_guidance > 1.0
        negative, negative_mask = (encode_prompts(self.mllm, self.tokenizer, [negative_prompt], device=device)
                                   if use_text_cfg else (None, None))

        ref_generator = torch.Generator(device="cpu").manual_seed(seed)
        refs = [encode_latent(self.vae, image_to_pixels(im, self.max_pixels, self.max_input_side).to(device),
                              ref_generator)[0] for im in images]
        if len(refs) == 1 and align_to_reference:
            height, width = refs[0].shape[-2] * self.vae_scale_factor, refs[0].shape[-1] * self.vae_scale_factor
            out_height, out_width = height, width
        else:
            out_height, out_width = height, width
            width, height = fitted_size(width, height, self.max_pixels, max(width, height))
        if not refs:
            image_guidance = 1.0

        shape = (1, self.transformer.config.in_channels, height // self.vae_scale_factor,
                 width // self.vae_scale_factor)
        latents = randn_tensor(shape, generator=torch.Generator(device="cpu").manual_seed(seed), device=device,
                               dtype=text.dtype)
        solver.set_timesteps(steps, num_tokens=shape[-2] * shape[-1], device=device)
        timesteps = solver.timesteps
        ref_batch = [refs] if refs else None
        for i, t in enumerate(progress_bar(timesteps, desc="sampling", disable=not progress)):
            inside = cfg_range[0] <= i / len(timesteps) <= cfg_range[1]
            text_scale, image_scale = (text_guidance, image_guidance) if inside else (1.0, 1.0)
            v = self._velocity(latents, t, text, mask, ref_batch)
            if text_scale > 1.0 and image_scale > 1.0:
                v_ref = self._velocity(latents, t, negative, negative_mask, ref_batch)
                v_uncond = self._velocity(latents, t, negative, negative_mask, None)
                v = v_uncond + image_scale * (v_ref - v_uncond) + text_scale * (v - v_ref)
            elif text_scale > 1.0:
                v_uncond = self._velocity(latents, t, negative, negative_mask, None)
                v = v_uncond + text_scale * (v - v_uncond)
            latents = solver.step(v, latents)
            if on_step is not None:
                on_step(i + 1)
        pixels = decode_latent(self.vae, latents)
        if pixels.shape[-2:] != (out_height, out_width):
            pixels = torch.nn.functional.interpolate(pixels, size=(out_height, out_width), mode="bilinear")
        return pixels
