"""`Generator`: the Python generation API behind `omnideft generate` and `omnideft studio`.

    g = Generator.from_pretrained("tiny", adapters=["runs/a/adapter:0.7", "runs/b/adapter:0.5"])
    images = g("draw it", images=[query], examples=[(cond, result)], seed=0, n=2, steps=50)

The base is loaded once; adapters are applied as `generate --adapter A:w` does (one adapter at weight 1 is loaded
as is, several or another weight are merged into the base, adapters/compose.py), and `set_adapters` swaps them
without reading the base again: a single adapter is unloaded, a merge is undone by restoring the pristine weights
of the layers it touched (a CPU copy, kept from the first merge on). Image k of `n` is exactly the image of
`seed + k` alone, so every image has a one-image command line.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Callable, Sequence

import torch
from PIL import Image
from torch import nn

from omnideft.adapters import base_fingerprint, load_adapter
from omnideft.adapters.compose import weighted_deltas
from omnideft.adapters.export import merge_deltas, unload
from omnideft.adapters.folder import resolve_model_name
from omnideft.camera.conditioning import load_camera, read_camera_config
from omnideft.errors import UserError
from omnideft.generate.cameras import camera_prompt_for
from omnideft.generate.sampler import OmniGenSampler
from omnideft.generate.settings import as_adapter_list, resolve_device, resolve_dtype  # (shared with OmniGen2)
from omnideft.images import load_image
from omnideft.model import load_omnigen
from omnideft.prompts import NEGATIVE_PROMPT
from omnideft.prompts.in_context import compose_in_context
from omnideft.prompts.processor import crop_image

DEFAULT_SIZE = 1024  # output side without --height/--width and without a query image (OmniGen's default)


class Generator:
    def __init__(self, components, *, device: str = "auto", dtype: str = "auto", camera_encoding: str = "auto"):
        """`components`: OmniGenComponents of the base (omnideft.model.load_omnigen), without adapters."""
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.camera_encoding = camera_encoding
        self.components = components
        self.model_name = components.name
        self.fingerprint = base_fingerprint(components.transformer)  # of the bare base, before any camera token
        self.transformer: nn.Module = components.transformer
        self.adapters: list[tuple[str, float]] = []
        self.camera_prompt = camera_prompt_for(None, camera_encoding, None)
        self._camera_adapter: str | None = None  # adapter whose camera conditioning is attached
        self._pristine: dict[str, torch.Tensor] = {}  # module name -> base weight (CPU) of layers merged into
        self._merged: set[str] = set()
        components.transformer.to(self.device)  # load_omnigen has set the dtype
        components.vae.to(self.device)

    @classmethod
    def from_pretrained(cls, model: str | None = None, adapters: Sequence = (), *, device: str = "auto",
                        dtype: str = "auto", camera_encoding: str = "auto", family: str = "auto") -> "Generator":
        """Load the base (`model`: hub id, diffusers folder, 'tiny' or 'small'; default: the first adapter's base) and
        apply
        `adapters` ("PATH[:w]" or (path, w)). Camera settings are checked before the model loads. An OmniGen2 base
        (`family`, else read from the folder or the adapter) gives an OmniGen2Generator (omnigen2_generator.py)."""
        from omnideft.generate.omnigen2_generator import OmniGen2Generator, generation_family  # OmniGen2 backend

        if generation_family(model, family, adapters) == "omnigen2":
            return OmniGen2Generator.from_pretrained(model, adapters, device=device, dtype=dtype)
        adapters = as_adapter_list(adapters)
        first = adapters[0][0] if adapters else None
        camera_prompt_for(read_camera_config(first) if first else None, camera_encoding, first)
        name = resolve_model_name(model, first)
        device_name = resolve_device(device)
        components = load_omnigen(name, dtype=resolve_dtype(dtype, device_name))
        generator = cls(components, device=device_name, dtype=dtype, camera_encoding=camera_encoding)
        generator.set_adapters(adapters)
        return generator

    # -- adapters ---------------------------------------------------------------------------------------------
    def set_adapters(self, adapters: Sequence) -> None:
        """Replace the applied adapters. The camera conditioning comes with the first adapter (as in the CLI); when
        it changes, the base is read again, since a camera token changes the tokenizer and the embedding table."""
        adapters = as_adapter_list(adapters)
        if adapters == self.adapters:
            return
        first = adapters[0][0] if adapters else None
        camera_config = read_camera_config(first) if first else None
        camera_prompt = camera_prompt_for(camera_config, self.camera_encoding, first)
        camera_adapter = first if camera_config else None
        self._remove_adapters()
        if camera_adapter != self._camera_adapter:
            if self._camera_adapter is not None:
                self._reload_base()
            if camera_adapter is not None:  # camera first: it may grow the table the adapter was saved with
                try:
                    load_camera(self.transformer, self.components.tokenizer, camera_adapter)
                except BaseException:
                    self._reload_base()  # a half-attached camera token must not stay in the model
                    raise
                self.transformer.to(self.device)
            self._camera_adapter = camera_adapter
        self.camera_prompt = camera_prompt
        try:
            self._apply(adapters)
        except BaseException:
            self._remove_adapters()
            raise
        self.adapters = adapters

    def _apply(self, adapters: list[tuple[str, float]]) -> None:
        if not adapters:
            return
        if len(adapters) == 1 and adapters[0][1] == 1.0:
            self.transformer = load_adapter(self.transformer, adapters[0][0]).to(self.device)
            return
        self.transformer, weighted = weighted_deltas(self.transformer, adapters)
        layers = dict(self.transformer.named_modules())
        for _, deltas in weighted:  # keep the base weights of the layers this merge changes (once, on the CPU)
            for name in deltas:
                if name not in self._pristine:
                    self._pristine[name] = layers[name].weight.detach().to("cpu", copy=True)
                self._merged.add(name)
        merge_deltas(self.transformer, weighted)

    def _remove_adapters(self) -> None:
        """Back to the bare base: unload an adapter that was loaded as is, restore the layers a merge changed."""
        if hasattr(self.transformer, "get_base_model"):
            self.transformer = unload(self.transformer)
        layers = dict(self.transformer.named_modules())
        with torch.no_grad():
            for name in self._merged:
                layers[name].weight.copy_(self._pristine[name])
        self._merged.clear()
        self.adapters = []

    def _reload_base(self) -> None:
        components = load_omnigen(self.model_name, dtype=self.dtype)
        components.transformer.to(self.device)
        components.vae.to(self.device)
        self.components, self.transformer = components, components.transformer
        self._pristine.clear()
        self._merged.clear()
        self._camera_adapter = None

    # -- sampling ---------------------------------------------------------------------------------------------
    def max_side(self) -> int:
        """The largest output side the transformer's position table allows."""
        config = self.components.transformer.config
        return config.pos_embed_max_size * config.patch_size * self.components.vae_scale_factor

    def output_size(self, images: Sequence = (), height: int | None = None, width: int | None = None,
                    max_input_image_size: int = 1024) -> tuple[int, int]:
        """(height, width) of the output: the given sides, else the first query image's size after the input
        resize (`max_input_image_size`), else 1024; rounded down to the model's 16-px grid, and checked."""
        step = self.components.vae_scale_factor * 2
        if height is None or width is None:
            if images:
                w0, h0 = crop_image(_as_image(images[0]).convert("RGB"), max_input_image_size).size
            else:
                w0 = h0 = DEFAULT_SIZE
            height, width = height or h0, width or w0
        top = self.max_side()
        for label, side in (("height", height), ("width", width)):
            if side < step:
                raise UserError(f"{label} {side} is below the smallest output side {step}")
            if side // step * step > top:
                raise UserError(f"{label} {side} is more than this model can do ({self.model_name}: at most {top} "
                                "px a side)")
        return height // step * step, width // step * step

    def __call__(self, prompt: str, images: Sequence = (), examples: Sequence = (), *, seed: int = 0, n: int = 1,
                 height: int | None = None, width: int | None = None, steps: int = 50, guidance: float = 2.5,
                 image_guidance: float = 1.6, negative_prompt: str | None = None,
                 camera: Sequence[float] | None = None, max_input_image_size: int = 1024, progress: bool = False,
                 on_step: Callable[[int, int], None] | None = None) -> list[Image.Image]:
        """`images`: query images (PIL or paths), referenced in `prompt` as <|image_k|>; `examples`: in-context
        (condition, result) pairs; `camera`: the 11 numbers (docs/camera.md); `negative_prompt` None = OmniGen's.
        `on_step(done, total)` is called after every sampling step of all `n` images."""
        if n < 1:
            raise UserError(f"number of images {n} must be at least 1")
        if steps < 1:
            raise UserError(f"steps {steps} must be at least 1")
        query = [_as_image(im) for im in images]
        pairs = [(_as_image(a), _as_image(b)) for a, b in examples]
        instruction, all_images = compose_in_context(prompt, query, pairs)
        height, width = self.output_size(query, height, width, max_input_image_size)
        extra = {}
        if camera is not None:
            instruction = self.camera_prompt.instruction(instruction, camera)
            if self.camera_prompt.encoding == "learned":
                extra["camera"] = list(camera)
        sampler = OmniGenSampler(self.transformer, self.components.vae, self.components.tokenizer,
                                 self.components.scheduler, max_input_image_size)
        out = []
        for k in range(n):
            step_done = None if on_step is None else partial(_report_step, on_step, k * steps, n * steps)
            out.append(sampler(instruction, all_images, height=height, width=width, steps=steps, guidance=guidance,
                               image_guidance=image_guidance, seed=seed + k, progress=progress,
                               negative_prompt=NEGATIVE_PROMPT if negative_prompt is None else negative_prompt,
                               on_step=step_done, **extra))
        return out


def _report_step(on_step: Callable[[int, int], None], before: int, total: int, i: int) -> None:
    on_step(before + i, total)


def _as_image(x) -> Image.Image:
    return load_image(x) if isinstance(x, (str, Path)) else x
