"""The small base's held-out task metrics (its model card): generate held-out queries of the pretraining tasks and
score them with exact masks (omnideft/shapes/score.py); writes heldout.json and heldout.png beside the weights.
`reconstruction_fn` scores the VAE alone (each target encoded and decoded): the best any transformer on that VAE
can score (benchmarks/small_base_bounds.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import torch
from PIL import Image

from omnideft.families.generator import to_pil
from omnideft.families.omnigen.model import load_omnigen
from omnideft.families.omnigen.processor import image_to_tensor
from omnideft.families.omnigen.sampler import OmniGenSampler
from omnideft.files import write_text_atomic
from omnideft.flow.vae import vae_decode
from omnideft.images import save_image_atomic
from omnideft.shapes.score import comparison_sheet, heldout_samples, sampler_fn, score
from omnideft.shapes.tasks import ShapeSample


def write_heldout_scores(folder: Path, tasks: list[str], per_task: int, seed: int, size: int, steps: int,
                         guidance: float, image_guidance: float, progress: bool = False) -> dict:
    """Score the model in `folder` on held-out queries of `tasks`; writes heldout.json and heldout.png there."""
    comps = load_omnigen(str(folder))
    sampler = OmniGenSampler(comps.transformer, comps.vae, comps.tokenizer, comps.scheduler, max_input_image_size=size)
    samples = heldout_samples(tasks, per_task, seed, size)
    table, images = score(sampler_fn(sampler, size, steps, guidance, image_guidance), samples, "held-out", progress)
    record = {"tasks": table, "queries_per_task": per_task, "seed": seed, "sampler_steps": steps,
              "guidance": guidance, "image_guidance": image_guidance}
    write_text_atomic(Path(folder) / "heldout.json", json.dumps(record, indent=2) + "\n")
    picks = [i for t in tasks for i in [j for j, s in enumerate(samples) if s.task == t][:2]]
    save_image_atomic(comparison_sheet([samples[i] for i in picks], {"generated": [images[i] for i in picks]}),
                      Path(folder) / "heldout.png")
    return table


def reconstruction_fn(vae) -> Callable[[ShapeSample, int], Image.Image]:
    """sample, i -> the sample's target encoded (the posterior's mean) and decoded by `vae`, as a generated image
    is decoded: scored like a generation, it bounds what the VAE lets a transformer draw."""
    def reconstruct(sample: ShapeSample, i: int) -> Image.Image:
        with torch.no_grad():
            latents = vae.encode(image_to_tensor(sample.target)[None]).latent_dist.mode() * vae.config.scaling_factor
            pixels = (vae_decode(vae, latents) / 2 + 0.5).clamp(0, 1)[0].permute(1, 2, 0).numpy()
        return to_pil(pixels)
    return reconstruct
