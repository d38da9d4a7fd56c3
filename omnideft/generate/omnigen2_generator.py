"""OmniGen2 behind `omnideft generate` and the `Generator` API (docs/omnigen2.md): which family a request is for,
the `OmniGen2Generator` (base loaded once, adapters merged or composed, in-context examples and reference images,
text / image guidance with a guidance step range, Euler or DPM-Solver++), and the command's OmniGen2 run.

Adapters: one at weight 1 is loaded as is (its forward); several, or another weight, are merged into the base as
W + sum of w x delta (adapters/compose.py). An adapter's MLLM part (`adapter.mllm_targets`, adapters/mllm.py) goes
into the MLLM the same way. `set_adapters` reads the base again rather than undoing a merge (the
OmniGen2 transformer is small next to its MLLM, which stays loaded).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Sequence

from PIL import Image

from omnideft.adapters import load_adapter
from omnideft.adapters.compose import merge_adapters
from omnideft.adapters.export import unload
from omnideft.adapters.folder import adapter_family, resolve_model_name
from omnideft.errors import UserError
from omnideft.families.omnigen2.mllm import has_mllm_adapter, load_mllm_adapter, merge_mllm_adapters
from omnideft.families.registry import get_family, resolve_family
from omnideft.generate.contact_sheet import contact_sheet
from omnideft.generate.omnigen2_sampler import OmniGen2Sampler
from omnideft.generate.settings import as_adapter_list, resolve_device, resolve_dtype
from omnideft.images import as_image, load_image, save_image_atomic
from omnideft.model.omnigen2 import check_reference_images
from omnideft.model.omnigen2.prompt import NEGATIVE_PROMPT
from omnideft.model.omnigen2.scheduler import SCHEDULERS
from omnideft.prompts.in_context import compose_in_context

# The published inference script's defaults (OmniGen v1's are 2.5 / 1.6 and its own scheduler).
TEXT_GUIDANCE, IMAGE_GUIDANCE = 5.0, 2.0


def generation_family(model: str | None, family: str = "auto", adapters: Sequence = ()) -> str:
    """`omnigen` or `omnigen2` for a base (`model`, else the first adapter's base): a folder says which; for a
    preset (`tiny`) the first adapter's recorded family does, then `family`."""
    adapters = as_adapter_list(adapters)
    first = adapters[0][0] if adapters else None
    return resolve_family(resolve_model_name(model, first), family, adapter_family(first) if first else None).name


def check_reference_count(query: int, examples: int) -> None:
    """Before any model loads: OmniGen2 takes at most five images, in-context example pairs counting two each."""
    check_reference_images(query + 2 * examples, f"reference images ({query} query + {examples} example pairs x 2)")


class OmniGen2Generator:
    family = "omnigen2"

    def __init__(self, components, *, device: str = "auto", dtype: str = "auto"):
        """`components`: OmniGen2Components of the base (model/omnigen2/folder.py), without adapters."""
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.components = components
        self.model_name = components.name
        self.transformer = components.transformer
        self.adapters: list[tuple[str, float]] = []
        self._mllm_adapter = None  # the MLLM part of a single adapter (adapters/mllm.py), injected as is
        self._mllm_merged = False  # MLLM parts merged into the MLLM's weights
        for part in (components.transformer, components.vae, components.mllm):
            part.to(self.device)

    @classmethod
    def from_pretrained(cls, model: str | None = None, adapters: Sequence = (), *, device: str = "auto",
                        dtype: str = "auto") -> "OmniGen2Generator":
        """`model`: 'tiny' or a folder in the published layout (default: the first adapter's base)."""
        from omnideft.model.omnigen2.folder import load_omnigen2

        adapters = as_adapter_list(adapters)
        name = resolve_model_name(model, adapters[0][0] if adapters else None)
        device_name = resolve_device(device)
        generator = cls(load_omnigen2(name, dtype=resolve_dtype(dtype, device_name)), device=device_name,
                        dtype=dtype)
        generator.set_adapters(adapters)
        return generator

    def set_adapters(self, adapters: Sequence) -> None:
        """Replace the applied adapters ("PATH[:w]" or (path, w)); a v1 adapter is one line naming both families."""
        adapters = as_adapter_list(adapters)
        if adapters == self.adapters:
            return
        if self.adapters:
            self._reload_base()
        try:
            if len(adapters) == 1 and adapters[0][1] == 1.0:
                self.transformer = load_adapter(self.transformer, adapters[0][0],
                                                family=get_family(self.family)).to(self.device)
                if has_mllm_adapter(adapters[0][0]):  # adapter.mllm_targets: its MLLM part, loaded as is
                    self._mllm_adapter = load_mllm_adapter(self.components.mllm, adapters[0][0])
            elif adapters:
                self.transformer = merge_adapters(self.transformer, adapters)
                if any(has_mllm_adapter(folder) for folder, _ in adapters):
                    self._mllm_merged = True
                    merge_mllm_adapters(self.components.mllm, adapters)
        except BaseException:
            self._reload_base()  # a half-loaded or half-merged base must not stay
            raise
        self.adapters = adapters

    def _reload_base(self) -> None:
        from omnideft.model.omnigen2.folder import load_omnigen2

        fresh = load_omnigen2(self.model_name, dtype=self.dtype)
        fresh.transformer.to(self.device)
        self.components.transformer = self.transformer = fresh.transformer
        if self._mllm_adapter is not None:
            unload(self._mllm_adapter)
        if self._mllm_merged:
            self.components.mllm = fresh.mllm.to(self.device)
        self._mllm_adapter, self._mllm_merged = None, False
        self.adapters = []

    def __call__(self, prompt: str, images: Sequence = (), examples: Sequence = (), *, seed: int = 0, n: int = 1,
                 height: int | None = None, width: int | None = None, steps: int = 50,
                 guidance: float | None = None, image_guidance: float | None = None,
                 cfg_range: tuple[float, float] = (0.0, 1.0), scheduler: str = "euler",
                 negative_prompt: str | None = None, max_input_image_size: int = 1024,
                 max_pixels: int = 1024 * 1024) -> list[Image.Image]:
        """`images`: query images (PIL or paths), `<img><|image_k|></img>` in `prompt`; `examples`: in-context
        (condition, result) pairs (five images in all at most); guidance None = the published defaults (5.0 text,
        2.0 image); `cfg_range`: the fraction of the steps with guidance. Without height/width the output takes a
        single reference's size, else 1024 x 1024 (within `max_pixels`). Image k of `n` is the image of seed + k."""
        if n < 1 or steps < 1:
            raise UserError(f"number of images ({n}) and steps ({steps}) must be at least 1")
        if scheduler not in SCHEDULERS:
            raise UserError(f"scheduler {scheduler!r} is not one of {', '.join(SCHEDULERS)}")
        start, end = cfg_range
        if not 0.0 <= start <= end <= 1.0:
            raise UserError(f"guidance step range {start} {end}: give 0 <= start <= end <= 1")
        query = [as_image(im) for im in images]
        pairs = [(as_image(a), as_image(b)) for a, b in examples]
        check_reference_count(len(query), len(pairs))
        instruction, all_images = compose_in_context(prompt, query, pairs)
        sampler = OmniGen2Sampler(self.transformer, self.components.vae, self.components.mllm,
                                  self.components.tokenizer, self.components.scheduler, max_pixels=max_pixels,
                                  max_input_side=max_input_image_size)
        settings = dict(height=height or 1024, width=width or 1024, steps=steps, cfg_range=(start, end),
                        text_guidance=TEXT_GUIDANCE if guidance is None else guidance,
                        image_guidance=IMAGE_GUIDANCE if image_guidance is None else image_guidance,
                        negative_prompt=NEGATIVE_PROMPT if negative_prompt is None else negative_prompt,
                        align_to_reference=height is None and width is None, scheduler=scheduler)
        return [sampler(instruction, all_images, seed=seed + k, **settings) for k in range(n)]


def validation_sampler(model, components, max_image_size: int):
    """The trainer's validation renders (generate/validation.py) on OmniGen2: the v1 sampler's call, guidance
    scales as the recipe's validation section gives them, outputs at the requested size."""
    sampler = OmniGen2Sampler(model, components.vae, components.mllm, components.tokenizer, components.scheduler,
                              max_pixels=max_image_size ** 2, max_input_side=max_image_size)

    def render(prompt: str, images: list, *, height: int, width: int, steps: int, guidance: float,
               image_guidance: float, seed: int) -> Image.Image:
        return sampler(prompt, images, height=height, width=width, steps=steps, text_guidance=guidance,
                       image_guidance=image_guidance, seed=seed, align_to_reference=False)

    return render


def run_generate_omnigen2(req) -> dict[str, Path]:
    """`omnideft generate` for an OmniGen2 base (req: generate/run.py's GenerateRequest): image + contact sheet.
    Settings OmniGen2 lacks and the image count fail before the model loads."""
    camera = [flag for flag, value in (("--camera", req.camera), ("--camera-from", req.camera_from),
                                       ("--view", req.view), ("--orbit", req.orbit)) if value]
    if camera:
        raise UserError(f"{camera[0]}: cameras are OmniGen (v1) only; OmniGen2 generates without a camera")
    check_reference_count(len(req.images), len(req.examples))
    query = [load_image(p) for p in req.images]
    pairs = [(load_image(a), load_image(b)) for a, b in req.examples]
    generator = OmniGen2Generator.from_pretrained(req.model, req.adapters, device=req.device, dtype=req.dtype)
    image = generator(req.prompt, query, pairs, seed=req.seed, height=req.height, width=req.width, steps=req.steps,
                      guidance=req.guidance, image_guidance=req.image_guidance, cfg_range=tuple(req.cfg_range),
                      scheduler=req.scheduler, negative_prompt=req.negative_prompt,
                      max_input_image_size=req.max_input_image_size)[0]
    out = save_image_atomic(image, req.out)
    sheet_path = Path(req.sheet) if req.sheet else out.with_name(out.stem + "_sheet.png")
    save_image_atomic(contact_sheet(pairs, query, image), sheet_path)
    return {"image": out, "contact sheet": sheet_path}


def omnigen_request(req):
    """The request for an OmniGen (v1) base: guidance left unset takes OmniGen's defaults (2.5 text, 1.6 image);
    OmniGen2-only settings are one line."""
    if req.scheduler != "euler" or tuple(req.cfg_range) != (0.0, 1.0):
        raise UserError("--scheduler and --cfg-range are OmniGen2 settings; this base is OmniGen (v1) "
                        "(use --family omnigen2 with an OmniGen2 base)")
    return replace(req, guidance=2.5 if req.guidance is None else req.guidance,
                   image_guidance=1.6 if req.image_guidance is None else req.image_guidance)
