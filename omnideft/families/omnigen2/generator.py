"""OmniGen2's generator on the one surface (families/generator.py): in-context examples and reference images (five
at most, family.max_input_images), text / image guidance with a guidance step range (`cfg_range`), Euler or
DPM-Solver++ (`scheduler`), and OmniGen2's output-size rule (one reference image and no size given: its size).

An adapter's MLLM part (`adapter.mllm_targets`, families/omnigen2/mllm.py) reaches the MLLM the way the transformer part
reaches the transformer: loaded as is with `merge=False`, else merged with the MLLM's pristine weights kept, so
`set_adapters` never reads the base again.
"""

from __future__ import annotations

from typing import Sequence

from omnideft.adapters.compose import weighted_deltas
from omnideft.adapters.export import unload
from omnideft.errors import UserError
from omnideft.families.generator import FamilyGenerator, check_sides
from omnideft.families.omnigen2.mllm import has_mllm_adapter, load_mllm_adapter
from omnideft.families.omnigen2.model.latents import fitted_size
from omnideft.families.omnigen2.model.prompt import NEGATIVE_PROMPT
from omnideft.families.omnigen2.sampler import OmniGen2Sampler
from omnideft.images import as_image

MAX_PIXELS = 1024 * 1024  # the published pipeline's pixel budget of the output and of each reference
SIDE_STEP = 16


class OmniGen2Generator(FamilyGenerator):
    def __init__(self, family, components, *, device: str = "auto", dtype: str = "auto", merge: bool = True):
        """`components`: OmniGen2Components of the base (families/omnigen2/model/folder.py), without adapters."""
        super().__init__(family, components, device=device, dtype=dtype, merge=merge)
        self._mllm_adapter = None  # the MLLM part of a single adapter loaded as is
        for part in (components.transformer, components.vae, components.mllm):
            part.to(self.device)

    # -- the MLLM part of the adapters ------------------------------------------------------------------------
    def _load_parts(self, folder: str) -> None:
        if has_mllm_adapter(folder):
            self._mllm_adapter = load_mllm_adapter(self.components.mllm, folder)

    def _merge_parts(self, adapters: list[tuple[str, float]]) -> None:
        with_mllm = [(folder, weight) for folder, weight in adapters if has_mllm_adapter(folder)]
        if with_mllm:
            mllm, weighted = weighted_deltas(self.components.mllm, with_mllm, load_mllm_adapter)
            self.components.mllm = mllm
            self._merge(mllm, weighted)

    def _unload_parts(self) -> None:
        if self._mllm_adapter is not None:
            self.components.mllm = unload(self._mllm_adapter)
            self._mllm_adapter = None

    # -- sampling ---------------------------------------------------------------------------------------------
    def output_size(self, images: Sequence = (), height: int | None = None, width: int | None = None,
                    max_input_image_size: int = 1024) -> tuple[int, int]:
        """(height, width) of the output: the given sides (positive multiples of 16), else the size of a single
        query image as the sampler reads it (within MAX_PIXELS and `max_input_image_size`), else the model's
        default size. A size beyond MAX_PIXELS is sampled within it and resized, as the published pipeline does."""
        check_sides(height, width, SIDE_STEP, None, self.model_name)
        if height is None and width is None and len(images) == 1:
            image = as_image(images[0])
            width, height = fitted_size(image.width, image.height, MAX_PIXELS, max_input_image_size)
            return height, width
        return height or self.defaults.size, width or self.defaults.size

    def _sample(self, instruction, images, *, height, width, steps, guidance, image_guidance, seed, negative_prompt,
                camera, max_input_image_size, progress, on_step, scheduler, cfg_range):
        start, end = cfg_range
        if not 0.0 <= start <= end <= 1.0:
            raise UserError(f"guidance step range {start} {end}: give 0 <= start <= end <= 1")
        sampler = OmniGen2Sampler(self.transformer, self.components.vae, self.components.mllm,
                                  self.components.tokenizer, self.components.scheduler, max_pixels=MAX_PIXELS,
                                  max_input_side=max_input_image_size)
        pixels = sampler.pixels(instruction, images, height=height, width=width, steps=steps,
                                text_guidance=guidance, image_guidance=image_guidance, cfg_range=(start, end),
                                seed=seed, scheduler=scheduler, align_to_reference=False, progress=progress,
                                on_step=on_step,
                                negative_prompt=NEGATIVE_PROMPT if negative_prompt is None else negative_prompt)
        return (pixels / 2 + 0.5).clamp(0, 1)[0].cpu().permute(1, 2, 0).float().numpy()
