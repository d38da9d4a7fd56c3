"""The one generation surface (family.py's `Generator`) as code every family's generator shares; `FamilyGenerator` is
`from omnideft import Generator`:

    g = Generator.from_pretrained("tiny", adapters=["runs/a/adapter:0.7", "runs/b/adapter:0.5"])
    images = g("draw it", images=[query], examples=[(cond, result)], seed=0, n=2)

`from_pretrained` resolves the family (the registry's resolver: a folder says which, a preset takes the first
adapter's recorded family, then `family`), refuses in one line the settings the family declares it lacks, lets the
family's generator check the rest before the base loads, and returns that family's generator.

Adapters are merged into the base (W + sum of weight x delta through each method's exact form: zero inference
overhead), or with `merge=False` one adapter at weight 1 stays a separate module. `set_adapters` swaps them without
reading the base again: a separate adapter is unloaded, a merge is undone by restoring the pristine weights of the
layers it touched (a CPU copy, kept from the first merge on) - in the transformer and in any other part a family's
adapters reach (OmniGen2's MLLM). Image k of `n` is exactly the image of `seed + k` alone, so every image has a
one-image command line. A setting left None is the family's default for the model (`family.defaults`).

A family's generator implements `_sample` (one image as floats [H, W, 3] in [0, 1]) and `output_size`, and where its
adapters reach more than the transformer, `_load_parts` / `_merge_parts` / `_unload_parts`.
"""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn

from omnideft.adapters import base_fingerprint, load_adapter
from omnideft.adapters.compose import parse_adapter_arg
from omnideft.adapters.export import adapter_deltas, merge_deltas, unload
from omnideft.adapters.folder import adapter_family, resolve_model_name
from omnideft.errors import UserError
from omnideft.families.family import Generator
from omnideft.families.registry import AUTO, all_families, resolve_family
from omnideft.images import as_image
from omnideft.prompts.in_context import compose_in_context

if TYPE_CHECKING:
    from omnideft.families.family import ModelFamily

OUTPUT_TYPES = ("pil", "np")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# The generator settings a family may lack: keyword -> (the value that asks nothing of it, the feature of
# family.unsupported it needs, the flag the user wrote).
SETTINGS = {
    "merge": (True, "merge", "--no-merge"),
    "kv_cache": (True, "kv_cache", "--no-kv-cache"),
    "separate_cfg": (False, "separate_cfg", "--separate-cfg"),
    "offload": (False, "offload", "--offload"),
    "offload_kv_cache": (False, "offload", "--offload-kv-cache"),
    "quantize": (None, "quantize", "--quantize"),
    "camera_encoding": ("auto", "camera", "--camera-encoding"),
}


def resolve_device(device: str) -> str:
    return ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device


def resolve_dtype(dtype: str, device: str) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    if dtype not in DTYPES:
        raise UserError(f"dtype {dtype!r} is not one of auto, {', '.join(DTYPES)}")
    return DTYPES[dtype]


def as_adapter_list(adapters: Sequence) -> list[tuple[str, float]]:
    """"PATH[:w]" strings, folders (weight 1) or (path, weight) pairs -> [(path, weight)]."""
    out = []
    for a in adapters:
        if isinstance(a, str):
            out.append(parse_adapter_arg(a))
        elif isinstance(a, Path):
            out.append((str(a), 1.0))
        else:
            out.append((str(a[0]), float(a[1])))
    return out


def family_for(model: str | None, adapters: Sequence = (), family: str = AUTO) -> tuple[ModelFamily, str]:
    """The family and model name a generation uses (`model`, else the first adapter's base): the registry's
    resolver, a preset taking the first adapter's recorded family. Nothing is loaded."""
    adapters = as_adapter_list(adapters)
    first = adapters[0][0] if adapters else None
    name = resolve_model_name(model, first)
    return resolve_family(name, family, adapter_family(first) if first else None), name


def refuse_settings(family: ModelFamily, settings: dict) -> dict:
    """The settings (SETTINGS keywords) that ask something of `family`; one the family declares it lacks is one
    line naming the flag."""
    given = {key: value for key, value in settings.items() if value != SETTINGS[key][0]}
    for key, value in given.items():
        flag = SETTINGS[key][2]
        family.refuse(SETTINGS[key][1], flag if isinstance(value, bool) else f"{flag} {value}")
    return given


def family_options(family: ModelFamily, given: dict, flags: bool = True) -> dict:
    """`family`'s generate_options from `given` (every family's options by name, as a request holds them): its own
    ones, and one line for another family's option set to anything but its default."""
    own = {o.name for o in family.generate_options}
    for other in all_families():
        for option in other.generate_options:
            if option.name not in own and option.name in given and _differs(given[option.name], option.default):
                name = f"--{option.flag}" if flags else option.name
                raise UserError(f"{name}: an {other.title} setting; this base is {family.title}")
    return {o.name: given[o.name] for o in family.generate_options if o.name in given}


def _differs(value, default) -> bool:
    return (tuple(value) if isinstance(value, (list, tuple)) else value) != default


def check_merge(adapters: list[tuple[str, float]], merge: bool) -> None:
    if not merge and (len(adapters) > 1 or any(w != 1.0 for _, w in adapters)):
        given = ", ".join(f"{p}:{w:g}" for p, w in adapters)
        raise UserError(f"--no-merge keeps one adapter at weight 1 apart from the base; {given} can only be merged "
                        "(exactly): leave out --no-merge")


def check_sides(height: int | None, width: int | None, step: int, top: int | None, model: str) -> None:
    """Given output sides: positive multiples of `step`, at most `top` when the model has a largest side."""
    for label, side in (("height", height), ("width", width)):
        if side is None:
            continue
        if side < step:
            raise UserError(f"{label} {side} is below the smallest output side {step}")
        if side % step:
            raise UserError(f"{label} {side} is not a multiple of {step} (e.g. {side // step * step} or "
                            f"{(side // step + 1) * step})")
        if top is not None and side > top:
            raise UserError(f"{label} {side} is more than this model can do ({model}: at most {top} px a side)")


def to_pil(image: np.ndarray) -> Image.Image:
    return Image.fromarray((image * 255).round().astype("uint8"))


def weighted_deltas_of(part: nn.Module, adapters: list[tuple[str, float]], load: Callable) -> tuple[nn.Module, list]:
    """[(weight, {module name: delta})] of every (folder, weight) as `load(part, folder)` puts it on `part`, each
    taken on the untouched part; returns the plain part (each adapter loaded and unloaded again) and the list."""
    weighted = []
    for folder, weight in adapters:
        model = load(part, folder)
        weighted.append((weight, adapter_deltas(model)))
        part = unload(model)
    return part, weighted


class FamilyGenerator(Generator):
    """The surface's shared code; a family's generator subclasses it (families/<name>/generator.py)."""

    def __init__(self, family: ModelFamily, components, *, device: str = "auto", dtype: str = "auto",
                 merge: bool = True):
        """`components`: the family's loaded base, without adapters. `merge`: fold adapters into the base (default)
        or keep one adapter at weight 1 separate."""
        self.family = family
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.merge = merge
        self.components = components
        self.model_name = components.name
        self.defaults = family.defaults(components.name)
        self.fingerprint = base_fingerprint(components.transformer)  # of the bare base
        self.transformer: nn.Module = components.transformer
        self.adapters: list[tuple[str, float]] = []
        self._pristine: dict[nn.Module, torch.Tensor] = {}  # layer -> its base weight (CPU), of layers merged into
        self._merged: set[nn.Module] = set()

    @classmethod
    def from_pretrained(cls, model: str | None = None, adapters: Sequence = (), *, family: str = AUTO,
                        device: str = "auto", dtype: str = "auto", **settings) -> FamilyGenerator:
        """Load the base (`model`: a preset, a folder or a hub id; default: the first adapter's base) and apply
        `adapters` ("PATH[:w]" or (path, w)). `settings`: SETTINGS keywords (merge, kv_cache, separate_cfg, offload,
        offload_kv_cache, quantize, camera_encoding); one the family lacks is refused, and every setting is checked
        before the model loads."""
        unknown = sorted(set(settings) - set(SETTINGS))
        if unknown:
            raise TypeError(f"from_pretrained() got unexpected keyword arguments {', '.join(unknown)}")
        adapters = as_adapter_list(adapters)
        chosen, name = family_for(model, adapters, family)
        given = refuse_settings(chosen, settings)
        device = resolve_device(device)
        kind = chosen.generator_class()
        kind.check(adapters, device, **given)
        generator = chosen.generator(chosen.load(name, dtype=resolve_dtype(dtype, device)), device=device,
                                     dtype=dtype, **given)
        generator.set_adapters(adapters)
        return generator

    @classmethod
    def check(cls, adapters: list[tuple[str, float]], device: str, **settings) -> None:
        """What can be checked of the settings before the model loads."""
        check_merge(adapters, settings.get("merge", True))

    # -- adapters ---------------------------------------------------------------------------------------------
    def set_adapters(self, adapters: Sequence) -> None:
        """Replace the applied adapters, without reading the base again."""
        adapters = as_adapter_list(adapters)
        if adapters == self.adapters:
            return
        check_merge(adapters, self.merge)
        self._remove_adapters()
        self._set(adapters)

    def _set(self, adapters: list[tuple[str, float]]) -> None:
        try:
            self._apply(adapters)
        except BaseException:
            self._remove_adapters()  # a half-loaded or half-merged base must not stay
            raise
        self.adapters = adapters

    def _apply(self, adapters: list[tuple[str, float]]) -> None:
        if not adapters:
            return
        if not self.merge:
            self.transformer = load_adapter(self.transformer, adapters[0][0], family=self.family).to(
                self._weights_device())
            self.components.transformer = self.transformer
            self._load_parts(adapters[0][0])
            return
        self.transformer, weighted = weighted_deltas_of(self.transformer, adapters,
                                                        partial(load_adapter, family=self.family))
        self.components.transformer = self.transformer
        self._merge(self.transformer, weighted)
        self._merge_parts(adapters)

    def _merge(self, part: nn.Module, weighted: list) -> None:
        """merge_deltas into `part`, keeping the base weights of the layers it changes (once, on the CPU)."""
        layers = dict(part.named_modules())
        for _, deltas in weighted:
            for name in deltas:
                layer = layers[name]
                if layer not in self._pristine:
                    self._pristine[layer] = layer.weight.detach().to("cpu", copy=True)
                self._merged.add(layer)
        merge_deltas(part, weighted)

    def _remove_adapters(self) -> None:
        """Back to the bare base: unload an adapter that was loaded as is, restore the layers a merge changed."""
        if hasattr(self.transformer, "get_base_model"):  # a PEFT wrapper of --no-merge (not a family test)
            self.transformer = self.components.transformer = unload(self.transformer)
        self._unload_parts()
        with torch.no_grad():
            for layer in self._merged:
                layer.weight.copy_(self._pristine[layer])
        self._merged.clear()
        self.adapters = []

    def _weights_device(self) -> str:
        return self.device

    def _load_parts(self, folder: str) -> None:
        """The parts besides the transformer that a single adapter loaded as is reaches (none by default)."""

    def _merge_parts(self, adapters: list[tuple[str, float]]) -> None:
        """Merge the adapters' parts besides the transformer (through `_merge`, none by default)."""

    def _unload_parts(self) -> None:
        """Unload what `_load_parts` loaded."""

    def max_side(self) -> int | None:
        """The largest output side the model's position table allows; None where it sets no bound."""
        return None

    def embedding_rows(self) -> int | None:
        """Rows of the prompt's token-embedding table where a camera token may grow it (the studio checks camera
        adapters against it); None where the family takes no camera."""
        return None

    # -- sampling ---------------------------------------------------------------------------------------------
    def output_size(self, images: Sequence = (), height: int | None = None, width: int | None = None,
                    max_input_image_size: int = 1024) -> tuple[int, int]:
        raise NotImplementedError

    def __call__(self, prompt: str, images: Sequence = (), examples: Sequence = (), *, seed: int = 0, n: int = 1,
                 height: int | None = None, width: int | None = None, steps: int | None = None,
                 guidance: float | None = None, image_guidance: float | None = None,
                 negative_prompt: str | None = None, camera: Sequence[float] | None = None,
                 max_input_image_size: int = 1024, progress: bool = False,
                 on_step: Callable[[int, int], None] | None = None, output_type: str = "pil", **options) -> list:
        """`images`: query images (PIL or paths), referenced in `prompt` as <|image_k|>; `examples`: in-context
        (condition, result) pairs; `camera`: the 11 numbers (docs/camera.md) where the family takes cameras;
        `negative_prompt` None = the family's. steps / guidance / image_guidance None = the family's defaults for
        this model. `on_step(done, total)` is called after every sampling step of all `n` images. `output_type`
        "pil" gives PIL images, "np" float arrays [H, W, 3] in [0, 1] (as diffusers' output_type="np").
        `options`: the family's own settings (family.generate_options, e.g. OmniGen2's scheduler)."""
        steps = self.defaults.steps if steps is None else steps
        guidance = self.defaults.guidance if guidance is None else guidance
        image_guidance = self.defaults.image_guidance if image_guidance is None else image_guidance
        if n < 1:
            raise UserError(f"number of images {n} must be at least 1")
        if steps < 1:
            raise UserError(f"steps {steps} must be at least 1")
        for label, value in (("guidance", guidance), ("image guidance", image_guidance)):
            if not math.isfinite(value):
                raise UserError(f"{label} {value} must be a finite number")
        if output_type not in OUTPUT_TYPES:
            raise UserError(f"output_type {output_type!r} is not one of {', '.join(OUTPUT_TYPES)}")
        own = {o.name: o.default for o in self.family.generate_options}
        unknown = sorted(set(options) - set(own))
        if unknown:
            raise UserError(f"{', '.join(unknown)}: not a setting of {self.family.title} (it takes "
                            f"{', '.join(own) or 'none of its own'})")
        options = {**own, **options}
        if camera is not None:
            self.family.refuse("camera", "camera")
        query = [as_image(im) for im in images]
        pairs = [(as_image(a), as_image(b)) for a, b in examples]
        self.family.check_input_images(len(query) + 2 * len(pairs), f"reference images ({len(query)} query + "
                                       f"{len(pairs)} example pairs x 2)")
        instruction, all_images = compose_in_context(prompt, query, pairs)
        height, width = self.output_size(query, height, width, max_input_image_size)
        out = []
        for k in range(n):
            step_done = None if on_step is None else partial(_report_step, on_step, k * steps, n * steps)
            image = self._sample(instruction, all_images, height=height, width=width, steps=steps, guidance=guidance,
                                 image_guidance=image_guidance, seed=seed + k, negative_prompt=negative_prompt,
                                 camera=camera, max_input_image_size=max_input_image_size, progress=progress,
                                 on_step=step_done, **options)
            out.append(to_pil(image) if output_type == "pil" else image)
        return out

    def _sample(self, instruction: str, images: list, *, height: int, width: int, steps: int, guidance: float,
                image_guidance: float, seed: int, negative_prompt: str | None, camera, max_input_image_size: int,
                progress: bool, on_step, **options) -> np.ndarray:
        """One image as floats [H, W, 3] in [0, 1]; `on_step(i)` after step i."""
        raise NotImplementedError


def _report_step(on_step: Callable[[int, int], None], before: int, total: int, i: int) -> None:
    on_step(before + i, total)
