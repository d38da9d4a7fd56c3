"""`Generator`: the Python generation API behind `omnideft generate` and `omnideft studio`.

    g = Generator.from_pretrained("tiny", adapters=["runs/a/adapter:0.7", "runs/b/adapter:0.5"])
    images = g("draw it", images=[query], examples=[(cond, result)], seed=0, n=2, steps=50)

The base is loaded once; adapters are merged into it (W + sum of weight x delta through each method's exact form,
adapters/compose.py: zero inference overhead), or with `merge=False` one adapter at weight 1 stays a separate
module (quick to swap, a little slower per step). `set_adapters` swaps them without reading the base again: a
separate adapter is unloaded, a merge is undone by restoring the pristine weights of the layers it touched (a CPU
copy, kept from the first merge on). Image k of `n` is exactly the image of `seed + k` alone, so every image has a
one-image command line.

Speed and memory (docs/generate.md): the condition KV cache (`kv_cache`, on by default, exact), guidance rows in one
batch (`separate_cfg=False`) or one by one, and on CUDA `offload` (diffusers' group offloading: the transformer's
blocks stay in CPU memory and each is moved to the GPU just before it runs, the next one prefetched on a side
stream) and `offload_kv_cache` (the cache in pinned CPU memory, one layer fetched ahead). `quantize` stores the base
as the trainer's `model.quantize` does (bf16, int8/fp8 through optimum-quanto, nf4 on CUDA; model/quantize.py), at the
first image, after the adapters are merged into the full-precision weights: the merge stays exact, and the adapters
are fixed from then on (as with `offload`).
"""

from __future__ import annotations

import math
from functools import partial
from typing import Callable, Sequence

import torch
from torch import nn

from omnideft.adapters import base_fingerprint, load_adapter
from omnideft.adapters.compose import weighted_deltas
from omnideft.adapters.export import merge_deltas, unload
from omnideft.adapters.fingerprint import adapter_tensor, base_model_of
from omnideft.adapters.folder import resolve_model_name
from omnideft.camera.conditioning import load_camera, read_camera_config
from omnideft.errors import UserError
from omnideft.generate.cameras import camera_prompt_for
from omnideft.generate.sampler import OmniGenSampler, to_pil
from omnideft.generate.settings import as_adapter_list, resolve_device, resolve_dtype  # (shared with OmniGen2)
from omnideft.images import as_image
from omnideft.model import load_omnigen
from omnideft.model.quantize import check_quantization, quantize_base
from omnideft.prompts import NEGATIVE_PROMPT
from omnideft.prompts.in_context import compose_in_context
from omnideft.prompts.processor import crop_image

DEFAULT_SIZE = 1024  # output side without --height/--width and without a query image (OmniGen's default), or the
# model's largest side when that is smaller (the tiny model's is 512)
OUTPUT_TYPES = ("pil", "np")


def check_omnigen2_settings(**given) -> None:
    """The v1 generator's speed and storage settings the OmniGen2 generator doesn't offer yet: one line, not ignored.
    `given`: the settings by keyword; each counts when it differs from the default."""
    defaults = {"merge": True, "separate_cfg": False, "offload": False, "offload_kv_cache": False, "quantize": None}
    changed = [name for name, value in given.items() if value != defaults[name]]
    if changed:
        flags = {"merge": "--no-merge"}
        names = ", ".join(flags.get(n, "--" + n.replace("_", "-")) for n in changed)
        raise UserError(f"{names}: OmniGen (v1) generation settings; the OmniGen2 generator doesn't offer them yet "
                        "(docs/omnigen2.md)")


def check_speed_options(device: str, kv_cache: bool, offload: bool, offload_kv_cache: bool) -> None:
    """--offload and --offload-kv-cache move things between CPU and GPU memory: CUDA only."""
    for option, given in (("--offload", offload), ("--offload-kv-cache", offload_kv_cache)):
        if given and not device.startswith("cuda"):
            available = "CUDA is not available here" if not torch.cuda.is_available() else f"the device is {device}"
            raise UserError(f"{option} needs a CUDA device ({available}); without it leave {option} out")
    if offload_kv_cache and not kv_cache:
        raise UserError("--offload-kv-cache offloads the KV cache, which --no-kv-cache turns off")


class Generator:
    def __init__(self, components, *, device: str = "auto", dtype: str = "auto", camera_encoding: str = "auto",
                 merge: bool = True, kv_cache: bool = True, separate_cfg: bool = False, offload: bool = False,
                 offload_kv_cache: bool = False, quantize: str | None = None):
        """`components`: OmniGenComponents of the base (omnideft.model.load_omnigen), without adapters.
        `merge`: fold adapters into the base (default) or keep one adapter at weight 1 separate; `kv_cache`: the
        exact condition KV cache; `separate_cfg`: guidance rows one by one; `offload`, `offload_kv_cache`: CUDA only
        (module docstring); `quantize`: None (as loaded), bf16, int8, fp8 or nf4 (CUDA)."""
        self.device = resolve_device(device)
        check_speed_options(self.device, kv_cache, offload, offload_kv_cache)
        check_quantization(quantize)
        self.quantize = quantize
        self._quantized = False
        self.dtype = resolve_dtype(dtype, self.device)
        self.camera_encoding = camera_encoding
        self.merge = merge
        self.kv_cache = kv_cache
        self.separate_cfg = separate_cfg
        self.offload = offload
        self.offload_kv_cache = offload_kv_cache
        self._offloaded = False
        self.components = components
        self.model_name = components.name
        self.fingerprint = base_fingerprint(components.transformer)  # of the bare base, before any camera token
        self.transformer: nn.Module = components.transformer
        self.adapters: list[tuple[str, float]] = []
        self.camera_prompt = camera_prompt_for(None, camera_encoding, None)
        self._camera_adapter: str | None = None  # adapter whose camera conditioning is attached
        self._pristine: dict[str, torch.Tensor] = {}  # module name -> base weight (CPU) of layers merged into
        self._merged: set[str] = set()
        # with offload the weights stay in CPU memory: offload_layers (at the first sampling, once the adapters are
        # in) moves each block to the GPU when it runs
        self.weights_device = "cpu" if offload else self.device
        components.transformer.to(self.weights_device)  # load_omnigen has set the dtype
        components.vae.to(self.device)

    @classmethod
    def from_pretrained(cls, model: str | None = None, adapters: Sequence = (), *, device: str = "auto",
                        dtype: str = "auto", camera_encoding: str = "auto", merge: bool = True,
                        kv_cache: bool = True, separate_cfg: bool = False, offload: bool = False,
                        offload_kv_cache: bool = False, quantize: str | None = None,
                        family: str = "auto") -> "Generator":
        """Load the base (`model`: hub id, diffusers folder, 'tiny' or 'small'; default: the first adapter's base) and
        apply `adapters` ("PATH[:w]" or (path, w)). Camera and device settings are checked before the model loads.
        An OmniGen2 base (`family`, else read from the folder or the adapter) gives an OmniGen2Generator
        (omnigen2_generator.py), which has none of the speed settings yet (docs/omnigen2.md)."""
        from omnideft.generate.omnigen2_generator import OmniGen2Generator, generation_family  # OmniGen2 backend

        if generation_family(model, family, adapters) == "omnigen2":
            check_omnigen2_settings(merge=merge, separate_cfg=separate_cfg, offload=offload,
                                    offload_kv_cache=offload_kv_cache, quantize=quantize)
            return OmniGen2Generator.from_pretrained(model, adapters, device=device, dtype=dtype)
        adapters = as_adapter_list(adapters)
        first = adapters[0][0] if adapters else None
        camera_prompt_for(read_camera_config(first) if first else None, camera_encoding, first)
        check_merge(adapters, merge)
        device_name = resolve_device(device)
        check_speed_options(device_name, kv_cache, offload, offload_kv_cache)
        check_quantization(quantize)
        name = resolve_model_name(model, first)
        components = load_omnigen(name, dtype=resolve_dtype(dtype, device_name))
        generator = cls(components, device=device_name, dtype=dtype, camera_encoding=camera_encoding, merge=merge,
                        kv_cache=kv_cache, separate_cfg=separate_cfg, offload=offload,
                        offload_kv_cache=offload_kv_cache, quantize=quantize)
        generator.set_adapters(adapters)
        return generator

    # -- adapters ---------------------------------------------------------------------------------------------
    def set_adapters(self, adapters: Sequence) -> None:
        """Replace the applied adapters. The camera conditioning comes with the first adapter (as in the CLI); when
        it changes, the base is read again, since a camera token changes the tokenizer and the embedding table."""
        adapters = as_adapter_list(adapters)
        if adapters == self.adapters:
            return
        if self._offloaded or self._quantized:
            setting = "offload" if self._offloaded else f"quantize={self.quantize}"
            raise UserError(f"a Generator with {setting} keeps the adapters it had at its first image; build another "
                            "one")
        check_merge(adapters, self.merge)
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
                self.transformer.to(self.weights_device)
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
        if not self.merge:
            self.transformer = load_adapter(self.transformer, adapters[0][0]).to(self.weights_device)
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
        components.transformer.to(self.weights_device)
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

    def input_size_limit(self, max_input_image_size: int = 1024) -> int:
        """The longest input side: `max_input_image_size`, lowered to what the position table holds (inputs
        bigger than the model's range are resized to fit, as --max-input-image-size resizes them)."""
        if max_input_image_size < self.components.vae_scale_factor * 2:
            raise UserError(f"max input image size {max_input_image_size} is below the smallest image side "
                            f"{self.components.vae_scale_factor * 2}")
        return min(max_input_image_size, self.max_side())

    def output_size(self, images: Sequence = (), height: int | None = None, width: int | None = None,
                    max_input_image_size: int = 1024) -> tuple[int, int]:
        """(height, width) of the output: the given sides (positive multiples of 16, within the model's range),
        else the first query image's size after the input resize (rounded down to the 16-px grid), else 1024 or the
        model's largest side when smaller."""
        step = self.components.vae_scale_factor * 2
        top = self.max_side()
        for label, side in (("height", height), ("width", width)):
            if side is None:
                continue
            if side < step:
                raise UserError(f"{label} {side} is below the smallest output side {step}")
            if side % step:
                raise UserError(f"{label} {side} is not a multiple of {step} (e.g. {side // step * step} or "
                                f"{(side // step + 1) * step})")
            if side > top:
                raise UserError(f"{label} {side} is more than this model can do ({self.model_name}: at most {top} "
                                "px a side)")
        if height is None or width is None:
            if images:
                limit = self.input_size_limit(max_input_image_size)
                w0, h0 = crop_image(as_image(images[0]), limit).size
            else:
                w0 = h0 = min(DEFAULT_SIZE, top)
            height, width = height or h0 // step * step, width or w0 // step * step
        return height, width

    def __call__(self, prompt: str, images: Sequence = (), examples: Sequence = (), *, seed: int = 0, n: int = 1,
                 height: int | None = None, width: int | None = None, steps: int = 50, guidance: float = 2.5,
                 image_guidance: float = 1.6, negative_prompt: str | None = None,
                 camera: Sequence[float] | None = None, max_input_image_size: int = 1024, progress: bool = False,
                 on_step: Callable[[int, int], None] | None = None, output_type: str = "pil") -> list:
        """`images`: query images (PIL or paths), referenced in `prompt` as <|image_k|>; `examples`: in-context
        (condition, result) pairs; `camera`: the 11 numbers (docs/camera.md); `negative_prompt` None = OmniGen's.
        `on_step(done, total)` is called after every sampling step of all `n` images. `output_type` "pil" gives
        PIL images, "np" float arrays [H, W, 3] in [0, 1] (as diffusers' output_type="np")."""
        if n < 1:
            raise UserError(f"number of images {n} must be at least 1")
        if steps < 1:
            raise UserError(f"steps {steps} must be at least 1")
        for label, value in (("guidance", guidance), ("image guidance", image_guidance)):
            if not math.isfinite(value):
                raise UserError(f"{label} {value} must be a finite number")
        if output_type not in OUTPUT_TYPES:
            raise UserError(f"output_type {output_type!r} is not one of {', '.join(OUTPUT_TYPES)}")
        query = [as_image(im) for im in images]
        pairs = [(as_image(a), as_image(b)) for a, b in examples]
        instruction, all_images = compose_in_context(prompt, query, pairs)
        height, width = self.output_size(query, height, width, max_input_image_size)
        max_input_image_size = self.input_size_limit(max_input_image_size)
        extra = {}
        if camera is not None:
            instruction = self.camera_prompt.instruction(instruction, camera)
            if self.camera_prompt.encoding == "learned":
                extra["camera"] = list(camera)
        sampler = self.sampler(max_input_image_size)
        out = []
        for k in range(n):
            step_done = None if on_step is None else partial(_report_step, on_step, k * steps, n * steps)
            latents = sampler.denoise(
                instruction, all_images, height=height, width=width, steps=steps, guidance=guidance,
                image_guidance=image_guidance, seed=seed + k, progress=progress,
                negative_prompt=NEGATIVE_PROMPT if negative_prompt is None else negative_prompt, on_step=step_done,
                **extra)
            image = sampler.decode(latents)
            out.append(to_pil(image) if output_type == "pil" else image)
        return out

    def sampler(self, max_input_image_size: int = 1024) -> OmniGenSampler:
        """The sampler with this generator's model and speed settings."""
        if self.quantize and not self._quantized:  # adapters merged (or loaded) into full-precision weights first
            quantize_base(base_model_of(self.transformer), self.quantize, exclude=adapter_tensor())
            self._quantized = True
        if self.offload and not self._offloaded:
            offload_layers(base_model_of(self.transformer), self.device)
            self._offloaded = True
        return OmniGenSampler(self.transformer, self.components.vae, self.components.tokenizer,
                              self.components.scheduler, max_input_image_size, kv_cache=self.kv_cache,
                              separate_cfg=self.separate_cfg, offload_kv_cache=self.offload_kv_cache,
                              device=self.device)


def check_merge(adapters: list[tuple[str, float]], merge: bool) -> None:
    if not merge and (len(adapters) > 1 or any(w != 1.0 for _, w in adapters)):
        given = ", ".join(f"{p}:{w:g}" for p, w in adapters)
        raise UserError(f"--no-merge keeps one adapter at weight 1 apart from the base; {given} can only be merged "
                        "(exactly): leave out --no-merge")


def offload_layers(transformer: nn.Module, device: str) -> None:
    """diffusers' group offloading at block level: each OmniGenBlock's weights live in CPU memory and move to
    `device` just before the block runs (the next block prefetched on a side stream where `device` has streams);
    the embeddings, norms and output projection form one more group."""
    transformer.to("cpu")
    streams = torch.device(device).type == "cuda"
    transformer.enable_group_offload(onload_device=torch.device(device), offload_device=torch.device("cpu"),
                                     offload_type="block_level", num_blocks_per_group=1, use_stream=streams,
                                     non_blocking=streams)


def _report_step(on_step: Callable[[int, int], None], before: int, total: int, i: int) -> None:
    on_step(before + i, total)
