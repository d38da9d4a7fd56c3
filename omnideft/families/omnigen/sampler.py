"""OmniGen's sampler: rows [conditional, negative, image-only], InstructPix2Pix-style CFG, Euler steps of the
rectified flow with diffusers' FlowMatchEulerDiscreteScheduler (t = 0 noise -> 1 data).

Given the same weights, seed and settings it reproduces diffusers' OmniGenPipeline: pixel for pixel with
`kv_cache=False` (the guidance rows in one batch, the whole condition recomputed at every step, as diffusers does),
and within float rounding (measured max abs pixel difference 0 to 1/255 in tests, see docs/generate.md) with
the condition KV cache (families/omnigen/kv_cache.py): the first step runs the full sequence and keeps every layer's
condition keys/values, later steps run only the time token and the output tokens. `separate_cfg` runs the rows one by
one (each with its own cache and without the other rows' padding) for less activation memory.

Initial latents come from a generator seeded with `seed`, and the input-image VAE samples from a second one with
the same seed (diffusers draws those from torch's global RNG). Pixels <-> latents go through flow/vae.py, the same
functions training uses; they honour a VAE's `shift_factor`, which diffusers' pipeline ignores (flow/vae.py).
"""

from __future__ import annotations

from contextlib import nullcontext

import numpy as np
import torch
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image

from omnideft.adapters.fingerprint import base_model_of
from omnideft.families.generator import to_pil
from omnideft.families.omnigen.collate import collate_prompts
from omnideft.families.omnigen.kv_cache import ConditionKVCache, condition_kv_cache, tail_inputs
from omnideft.families.omnigen.processor import NEGATIVE_PROMPT, OmniGenProcessor
from omnideft.flow.vae import vae_decode, vae_encode
from omnideft.progress import progress_bar


class OmniGenSampler:
    def __init__(self, transformer, vae, tokenizer, scheduler, max_input_image_size: int = 1024, *,
                 kv_cache: bool = True, separate_cfg: bool = False, offload_kv_cache: bool = False,
                 device: str | torch.device | None = None):
        """`offload_kv_cache`: keep the cache in (pinned, on CUDA) CPU memory, each layer's keys/values fetched one
        layer ahead (families/omnigen/kv_cache.py); the caller checks that it makes sense on its device. `device`:
        where the sampling runs (default: the transformer's; given when its weights are offloaded to the CPU)."""
        self.device = None if device is None else torch.device(device)
        self.transformer = transformer
        self.vae = vae
        self.scheduler = scheduler
        self.processor = OmniGenProcessor(tokenizer, max_image_size=max_input_image_size)
        self.vae_scale_factor = 2 ** (len(vae.config.block_out_channels) - 1)
        self.kv_cache = kv_cache
        self.separate_cfg = separate_cfg
        self.offload_kv_cache = offload_kv_cache
        self.last_caches: list[ConditionKVCache] = []  # of the last call, released (their `summary` stays)

    @torch.no_grad()
    def __call__(self, instruction: str, images: list[Image.Image] | None = None, *, height: int | None = None,
                 width: int | None = None, steps: int = 50, guidance: float = 2.5, image_guidance: float = 1.6,
                 seed: int = 0, negative_prompt: str = NEGATIVE_PROMPT, progress: bool = False,
                 camera=None, on_step=None) -> Image.Image:
        """`camera`: an 11-number vector for the `<cam>` token of a model with learned camera conditioning
        (omnideft/camera); the instruction must then contain `<cam>` (CameraPrompt.instruction).
        `on_step(i)` is called after step i (1-based), e.g. for a progress bar in a web page."""
        return to_pil(self.decode(self.denoise(
            instruction, images, height=height, width=width, steps=steps, guidance=guidance,
            image_guidance=image_guidance, seed=seed, negative_prompt=negative_prompt, progress=progress,
            camera=camera, on_step=on_step)))

    @torch.no_grad()
    def denoise(self, instruction: str, images: list[Image.Image] | None = None, *, height: int | None = None,
                width: int | None = None, steps: int = 50, guidance: float = 2.5, image_guidance: float = 1.6,
                seed: int = 0, negative_prompt: str = NEGATIVE_PROMPT, progress: bool = False,
                camera=None, on_step=None) -> torch.Tensor:
        """The final latents [1, C, h, w] (arguments as __call__)."""
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
        device = self.device or next(self.transformer.parameters()).device
        dtype = next(self.transformer.parameters()).dtype

        vae_gen = torch.Generator().manual_seed(seed)
        input_latents = [vae_encode(self.vae, pv, vae_gen) for pv in batch["input_pixel_values"]]
        f = self.vae_scale_factor
        shape = (1, self.transformer.config.in_channels, height // f, width // f)
        latents = randn_tensor(shape, generator=torch.Generator().manual_seed(seed), device=device,
                               dtype=torch.float32)
        sigmas = np.linspace(1, 0, steps + 1)[:steps]
        self.scheduler.set_timesteps(sigmas=sigmas, device=device)
        text_len = batch["input_ids"].shape[1]
        groups = [[r] for r in range(len(rows))] if self.separate_cfg else [list(range(len(rows)))]
        pads = [text_len - len(r.input_ids) for r in rows]
        forwards = [_group_inputs(batch, input_latents, g, min(pads[r] for r in g), device) for g in groups]
        base = base_model_of(self.transformer)
        store = "cpu" if self.offload_kv_cache else None
        caches = [ConditionKVCache(len(base.layers), store, pin=store is not None and device.type == "cuda")
                  for _ in groups] if self.kv_cache else [None] * len(groups)
        self.last_caches = [c for c in caches if c is not None]
        camera = torch.tensor(camera, dtype=torch.float32, device=device) if camera is not None else None
        try:
            with condition_kv_cache(base) if self.kv_cache else nullcontext() as slot:
                for i, t in enumerate(progress_bar(self.scheduler.timesteps, desc="sample", disable=not progress),
                                      1):
                    v = torch.cat([self._forward(latents, t, inputs, cache, slot, camera, dtype)
                                   for inputs, cache in zip(forwards, caches)])
                    if len(rows) == 3:
                        v_c, v_u, v_i = v.chunk(3)
                        v = v_u + image_guidance * (v_i - v_u) + guidance * (v_c - v_i)
                    else:
                        v_c, v_u = v.chunk(2)
                        v = v_u + guidance * (v_c - v_u)
                    latents = self.scheduler.step(v, t, latents, return_dict=False)[0]
                    if on_step is not None:
                        on_step(i)
        finally:
            for cache in self.last_caches:
                cache.release()
        return latents

    def _forward(self, latents, t, inputs: dict, cache: ConditionKVCache | None, slot, camera, dtype):
        n_rows = inputs["input_ids"].shape[0]
        kwargs = inputs
        if cache is not None:
            slot.cache = cache
            if cache.filled:
                cache.replay()
                kwargs = tail_inputs(inputs["attention_mask"], inputs["position_ids"], inputs["input_ids"].shape[1])
            else:
                cache.record(inputs["input_ids"].shape[1])
        extra = {"camera": camera} if camera is not None else {}
        return self.transformer(hidden_states=torch.cat([latents] * n_rows).to(dtype), timestep=t.expand(n_rows),
                                return_dict=False, **kwargs, **extra)[0]

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> np.ndarray:
        """Latents -> the image as floats in [0, 1], [H, W, 3] (what diffusers' output_type="np" gives)."""
        return (vae_decode(self.vae, latents) / 2 + 0.5).clamp(0, 1)[0].permute(1, 2, 0).float().cpu().numpy()


def _group_inputs(batch: dict, input_latents: list, rows: list[int], trim: int, device) -> dict:
    """The forward arguments of the prompt rows `rows` of a collated batch, without their first `trim` (pad)
    tokens. Position ids are always the first row's: diffusers' RoPE takes every row's angles from row 0
    (transformer_omnigen.OmniGenSuScaledRotaryEmbedding), so rows run apart see the angles they see together."""
    latents, sizes, k = [], {}, 0
    for b, spans in batch["input_image_sizes"].items():  # latents are in this order (the transformer's too)
        for s, e in spans:
            if b in rows:
                sizes.setdefault(rows.index(b), []).append([s - trim, e - trim])
                latents.append(input_latents[k])
            k += 1
    n = len(rows)
    return {"input_ids": batch["input_ids"][rows, trim:].to(device), "input_img_latents": latents,
            "input_image_sizes": sizes, "attention_mask": batch["attention_mask"][rows][:, trim:, trim:].to(device),
            "position_ids": batch["position_ids"][:1, trim:].expand(n, -1).to(device)}
