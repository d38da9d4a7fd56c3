"""Shard examples -> FLUX.2 [klein] training inputs, the way its pipeline takes them at generation: the instruction in
klein's wording (prompt.py: "image k"), the input images as reference images, the output image as the target; every
image sized by one rule (`fitted_size`: within `data.max_image_size` on its longer side and 1024^2 px, floored to
multiples of 16 - the pipeline's rule for references; references first brought to at least the pipeline's 64 px a
side, as the generator brings them: `reference_size`) and preprocessed by the pipeline's own Flux2ImageProcessor.

The transformer gives every row of a batch the first row's position ids (diffusers' Flux2Transformer2DModel reads
`img_ids[0]`), so a batch holds examples of one token layout: `layout(example)` - the target's size and each input's -
is the loader's size bucket. Condition dropout drops the prompt only (the empty prompt, the pipeline's unconditional
row), seeded by the example's place in the training order so a resumed run makes the same decisions; the references
stay, which keeps the batch's layout."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

import torch
from PIL import Image

from omnideft.data.shards import Example
from omnideft.families.flux2.prompt import klein_prompt

MAX_PIXELS = 1024 * 1024  # the pipeline's area bound for a reference image
SIDE_STEP = 16  # the VAE's 8x times the 2x2 latent patch
MIN_REFERENCE_SIDE = 64  # the pipeline refuses smaller references (Flux2ImageProcessor.check_image_input)


def fitted_size(width: int, height: int, max_side: int, max_pixels: int = MAX_PIXELS) -> tuple[int, int]:
    """(width, height) of an image within `max_side` and `max_pixels`, floored to multiples of SIDE_STEP (one step at
    least)."""
    scale = min(1.0, max_side / max(width, height), math.sqrt(max_pixels / (width * height)))
    return (max(int(width * scale) // SIDE_STEP, 1) * SIDE_STEP, max(int(height * scale) // SIDE_STEP, 1) * SIDE_STEP)


def reference_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """(width, height) a reference image is resized to before the pipeline's own sizing: within `max_side` on its
    longer side, but at least MIN_REFERENCE_SIDE on its shorter one (the pipeline's minimum wins over `max_side`)."""
    scale = min(1.0, max_side / max(width, height))
    scale = max(scale, MIN_REFERENCE_SIDE / min(width, height))
    if scale == 1.0:
        return width, height
    return max(round(width * scale), MIN_REFERENCE_SIDE), max(round(height * scale), MIN_REFERENCE_SIDE)


@dataclass
class Flux2Batch:
    prompts: list[str]
    targets: torch.Tensor  # [B, 3, H, W] in [-1, 1]
    references: list[torch.Tensor]  # per input image k: [B, 3, h_k, w_k] in [-1, 1] (one layout per batch)
    tasks: list[str] = field(default_factory=list)


class Flux2BatchBuilder:
    def __init__(self, condition_dropout: float, seed: int, max_side: int):
        from diffusers.pipelines.flux2.image_processor import Flux2ImageProcessor

        self.condition_dropout, self.seed, self.max_side = condition_dropout, seed, max_side
        self.processor = Flux2ImageProcessor(vae_scale_factor=SIDE_STEP)

    def size(self, image: Image.Image, reference: bool) -> tuple[int, int]:
        """(width, height) of a target (within `max_side`) or a reference (reference_size first, as generation)."""
        if not reference:
            return fitted_size(*image.size, self.max_side)
        width, height = reference_size(*image.size, self.max_side)
        return fitted_size(width, height, max(width, height))

    def layout(self, ex: Example) -> tuple:
        return (self.size(ex.output, False), *(self.size(im, True) for im in ex.inputs))

    def pixels(self, image: Image.Image, reference: bool) -> torch.Tensor:
        """[3, H, W] in [-1, 1], as the pipeline preprocesses a reference (resize and centre crop)."""
        width, height = self.size(image, reference)
        return self.processor.preprocess(image.convert("RGB"), height=height, width=width, resize_mode="crop")[0]

    def __call__(self, examples: list[Example]) -> Flux2Batch:
        prompts, tasks = [], []
        for ex in examples:
            instruction = klein_prompt(ex.instruction, len(ex.inputs), where=f"sample {ex.key}")
            rng = random.Random(f"flux2-dropout-{self.seed}-{ex.order_id or ex.key}")
            prompts.append("" if rng.random() < self.condition_dropout else instruction)
            tasks.append(ex.task)
        targets = torch.stack([self.pixels(ex.output, False) for ex in examples])
        references = [torch.stack([self.pixels(ex.inputs[k], True) for ex in examples])
                      for k in range(len(examples[0].inputs))]
        return Flux2Batch(prompts, targets, references, tasks)
