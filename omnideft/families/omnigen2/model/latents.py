"""Pixels <-> OmniGen2 latents: images resized to multiples of 16 px within a pixel budget (never up-scaled),
scaled to [-1, 1], VAE-encoded and normalised as (z - shift) * scale; the inverse for decoding. Same arithmetic as
the published pipeline's image processor (PIL Lanczos when a resize is needed, float32 [0, 1] then 2x - 1)."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

SIZE_MULTIPLE = 16  # the 8x VAE times the 2x2 patch


def fitted_size(width: int, height: int, max_pixels: int, max_side: int) -> tuple[int, int]:
    """(width, height) scaled by min(sqrt(max_pixels / pixels), max_side / longest side, 1), floored to 16 px."""
    ratio = min((max_pixels / (width * height)) ** 0.5, max_side / max(width, height), 1.0)
    return (int(width * ratio) // SIZE_MULTIPLE * SIZE_MULTIPLE, int(height * ratio) // SIZE_MULTIPLE * SIZE_MULTIPLE)


def image_to_pixels(image: Image.Image, max_pixels: int, max_side: int) -> torch.Tensor:
    """[1, 3, H, W] in [-1, 1]."""
    size = fitted_size(image.width, image.height, max_pixels, max_side)
    image = image.convert("RGB")
    if image.size != size:
        image = image.resize(size, resample=Image.LANCZOS)
    array = np.array(image).astype(np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1)[None] * 2.0 - 1.0


def encode_latent(vae, pixels: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """A sample of the VAE posterior (as the published pipeline takes), normalised by shift and scale."""
    z = vae.encode(pixels.to(vae.dtype)).latent_dist.sample(generator)
    if vae.config.shift_factor is not None:
        z = z - vae.config.shift_factor
    if vae.config.scaling_factor is not None:
        z = z * vae.config.scaling_factor
    return z


def decode_latent(vae, latent: torch.Tensor) -> torch.Tensor:
    """Normalised latents -> pixels in [-1, 1] (not clamped)."""
    z = latent.to(vae.dtype)
    if vae.config.scaling_factor is not None:
        z = z / vae.config.scaling_factor
    if vae.config.shift_factor is not None:
        z = z + vae.config.shift_factor
    return vae.decode(z, return_dict=False)[0]


def pixels_to_images(pixels: torch.Tensor) -> list[Image.Image]:
    """[-1, 1] -> 8-bit RGB, rounding as diffusers' image processor does."""
    array = (pixels / 2 + 0.5).clamp(0, 1).cpu().permute(0, 2, 3, 1).float().numpy()
    return [Image.fromarray((a * 255).round().astype("uint8")) for a in array]
