"""FLUX.2 [klein]'s generator on the one surface (families/generator.py): diffusers' own Flux2KleinPipeline, called
on the loaded (and adapted) modules, so an image is the pipeline's image for the same prompt, references, size, steps,
guidance and seed, with nothing added to its time.

What omnideft adds around the call: in-context examples and query images become the pipeline's reference images in
order (examples first), the prompt's placeholders its "image k" wording (prompt.py); at most four references;
references shrunk to `max_input_image_size` on their longer side and enlarged to the pipeline's minimum of 64 px on
their shorter side (batch.reference_size, the trainer's rule too), then held to the pipeline's own check (diffusers'
Flux2ImageProcessor.check_image_input) in one line instead of a traceback; the output takes the first query image's
size (as the pipeline sizes it) when no size is given. klein has one guidance, text and references together
(`guidance`); `image_guidance` is refused from the family's declaration, and a step-distilled klein refuses guidance
above 1 (its pipeline would ignore it). A negative prompt is encoded by the pipeline's `encode_prompt` and passed as
its `negative_prompt_embeds` (the pipeline's own negative is the empty prompt).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from PIL import Image

from omnideft.errors import UserError
from omnideft.families.flux2.batch import reference_size
from omnideft.families.flux2.prompt import klein_prompt
from omnideft.families.generator import FamilyGenerator, check_sides
from omnideft.images import as_image


class Flux2Generator(FamilyGenerator):
    def __init__(self, family, components, *, device: str = "auto", dtype: str = "auto", merge: bool = True):
        """`components`: Flux2Components of the base (families/flux2/model.py), without adapters."""
        super().__init__(family, components, device=device, dtype=dtype, merge=merge)
        for part in (components.transformer, components.vae, components.text_encoder):
            part.to(self.device)

    def __call__(self, prompt: str, images: Sequence = (), examples: Sequence = (), *,
                 image_guidance: float | None = None, **settings) -> list:
        if image_guidance is not None and image_guidance != self.defaults.image_guidance:
            self.family.refuse("image_guidance", f"image guidance {image_guidance:g}")
        return super().__call__(prompt, images, examples, image_guidance=image_guidance, **settings)

    def side_step(self) -> int:
        """Output sides are multiples of this: the VAE's factor times the 2x2 latent patch (the pipeline's rule)."""
        return self.components.vae_scale_factor * 2

    def output_size(self, images: Sequence = (), height: int | None = None, width: int | None = None,
                    max_input_image_size: int = 1024) -> tuple[int, int]:
        """(height, width): the given sides (multiples of 16 for klein's VAE), else the first query image's size as
        the pipeline preprocesses it (within 1024^2 px, floored to the side step), else the model's default size."""
        check_sides(height, width, self.side_step(), None, self.model_name)
        if images and (height is None or width is None):
            ref = reference_image(as_image(images[0]), max_input_image_size)
            ref_width, ref_height = processed_size(ref, self.side_step())
            return height or ref_height, width or ref_width
        return height or self.defaults.size, width or self.defaults.size

    def _sample(self, instruction, images, *, height, width, steps, guidance, image_guidance, seed, negative_prompt,
                camera, max_input_image_size, progress, on_step) -> np.ndarray:
        if self.components.is_distilled and guidance > 1:
            raise UserError(f"guidance {guidance:g}: {self.model_name} is the step-distilled FLUX.2 [klein], which "
                            "takes no guidance (leave it unset or 1)")
        prompt = klein_prompt(instruction, len(images), "prompt")
        refs = [reference_image(as_image(im), max_input_image_size, k) for k, im in enumerate(images, 1)]
        pipe = self.components.pipeline(self.transformer)
        pipe.set_progress_bar_config(disable=not progress)
        extra = {}
        if negative_prompt and guidance > 1 and not self.components.is_distilled:
            extra["negative_prompt_embeds"] = pipe.encode_prompt(negative_prompt)[0]
        if on_step is not None:
            extra["callback_on_step_end"] = lambda _pipe, i, _t, _tensors: on_step(i + 1) or {}
        out = pipe(image=refs or None, prompt=prompt, height=height, width=width, num_inference_steps=steps,
                   guidance_scale=guidance, generator=torch.Generator("cpu").manual_seed(seed), output_type="np",
                   **extra)
        return out.images[0]


def reference_image(image: Image.Image, max_side: int, k: int = 1) -> Image.Image:
    """A reference as the pipeline will take it: brought to batch.reference_size (within `max_side` on its longer
    side, at least the pipeline's 64 px on its shorter one; Lanczos, the pipeline's own resampling) and held to the
    pipeline's check (diffusers' Flux2ImageProcessor.check_image_input: aspect ratio within 8:1) in one line naming
    the image."""
    from diffusers.pipelines.flux2.image_processor import Flux2ImageProcessor

    image = image.convert("RGB")
    size = reference_size(image.width, image.height, max_side)
    if size != image.size:
        image = image.resize(size, Image.Resampling.LANCZOS)
    try:
        Flux2ImageProcessor.check_image_input(image)
    except ValueError as exc:
        raise UserError(f"reference image {k}: {exc} (FLUX.2 [klein]'s pipeline)") from None
    return image


def processed_size(image: Image.Image, side_step: int) -> tuple[int, int]:
    """(width, height) the pipeline gives a reference: within 1024^2 px, floored to multiples of `side_step`."""
    from diffusers.pipelines.flux2.image_processor import Flux2ImageProcessor

    width, height = image.size
    if width * height > 1024 * 1024:
        width, height = Flux2ImageProcessor._resize_to_target_area(image, 1024 * 1024).size
    return width // side_step * side_step, height // side_step * side_step
