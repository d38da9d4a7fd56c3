"""OmniGen (v1)'s generator on the one surface (families/generator.py): the condition KV cache and the speed and
memory settings, cameras, and v1's output-size rules.

Speed and memory (docs/generate.md): the condition KV cache (`kv_cache`, on by default, exact), guidance rows in one
batch (`separate_cfg=False`) or one by one, and on CUDA `offload` (diffusers' group offloading: the transformer's
blocks stay in CPU memory and each is moved to the GPU just before it runs, the next one prefetched on a side
stream) and `offload_kv_cache` (the cache in pinned CPU memory, one layer fetched ahead). `quantize` stores the base
as the trainer's `model.quantize` does (bf16, int8/fp8 through optimum-quanto, nf4 on CUDA; model/quantize.py), at the
first image, after the adapters are merged into the full-precision weights: the merge stays exact, and the adapters
are fixed from then on (as with `offload`).

The camera conditioning comes with the first adapter (as in the CLI); when it changes, the base is read again, since
a camera token changes the tokenizer and the embedding table. A transformer that already carries a camera
conditioning (the trainer's, for validation renders) prompts with it.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from omnideft.adapters.fingerprint import adapter_tensor, base_model_of
from omnideft.camera.conditioning import load_camera, read_camera_config
from omnideft.camera.prompt import CameraPrompt
from omnideft.errors import UserError
from omnideft.families.generator import FamilyGenerator, as_adapter_list, check_merge, check_sides
from omnideft.families.omnigen.processor import NEGATIVE_PROMPT, crop_image
from omnideft.families.omnigen.sampler import OmniGenSampler
from omnideft.images import as_image
from omnideft.model.quantize import check_quantization, quantize_base


def check_speed_options(device: str, kv_cache: bool, offload: bool, offload_kv_cache: bool) -> None:
    """--offload and --offload-kv-cache move things between CPU and GPU memory: CUDA only."""
    for option, given in (("--offload", offload), ("--offload-kv-cache", offload_kv_cache)):
        if given and not device.startswith("cuda"):
            available = "CUDA is not available here" if not torch.cuda.is_available() else f"the device is {device}"
            raise UserError(f"{option} needs a CUDA device ({available}); without it leave {option} out")
    if offload_kv_cache and not kv_cache:
        raise UserError("--offload-kv-cache offloads the KV cache, which --no-kv-cache turns off")


def camera_prompt_for(camera_config: dict | None, encoding: str, adapter: str | None) -> CameraPrompt:
    """`encoding` auto: the adapter's (camera.json), else text. learned needs an adapter trained with it."""
    saved = camera_config["encoding"] if camera_config else None
    if encoding == "auto":
        encoding = saved or "text"
    if encoding == "learned" and saved != "learned":
        raise UserError(f"--camera-encoding learned needs an adapter trained with camera.encoding learned; "
                        f"{adapter or 'no adapter'} has {saved or 'no camera encoder (no camera.json)'}")
    decimals = camera_config.get("spec", {}).get("text_decimals", 3) if camera_config else 3
    return CameraPrompt(encoding, decimals)


class OmniGenGenerator(FamilyGenerator):
    def __init__(self, family, components, *, device: str = "auto", dtype: str = "auto", merge: bool = True,
                 camera_encoding: str = "auto", kv_cache: bool = True, separate_cfg: bool = False,
                 offload: bool = False, offload_kv_cache: bool = False, quantize: str | None = None):
        """`components`: OmniGenComponents of the base (omnideft.model.load_omnigen), without adapters. `kv_cache`:
        the exact condition KV cache; `separate_cfg`: guidance rows one by one; `offload`, `offload_kv_cache`: CUDA
        only (module docstring); `quantize`: None (as loaded), bf16, int8, fp8 or nf4 (CUDA)."""
        super().__init__(family, components, device=device, dtype=dtype, merge=merge)
        check_speed_options(self.device, kv_cache, offload, offload_kv_cache)
        check_quantization(quantize)
        self.quantize = quantize
        self._quantized = False
        self.camera_encoding = camera_encoding
        self.kv_cache = kv_cache
        self.separate_cfg = separate_cfg
        self.offload = offload
        self.offload_kv_cache = offload_kv_cache
        self._offloaded = False
        conditioning = getattr(base_model_of(components.transformer), "camera_conditioning", None)
        self.camera_prompt = conditioning.prompt if conditioning is not None else \
            camera_prompt_for(None, camera_encoding, None)
        self._camera_adapter: str | None = None  # adapter whose camera conditioning is attached
        # with offload the weights stay in CPU memory: offload_layers (at the first sampling, once the adapters are
        # in) moves each block to the GPU when it runs
        components.transformer.to(self._weights_device())  # load_omnigen has set the dtype
        components.vae.to(self.device)

    @classmethod
    def check(cls, adapters: list[tuple[str, float]], device: str, **settings) -> None:
        first = adapters[0][0] if adapters else None
        camera_prompt_for(read_camera_config(first) if first else None, settings.get("camera_encoding", "auto"),
                          first)
        check_merge(adapters, settings.get("merge", True))
        check_speed_options(device, settings.get("kv_cache", True), settings.get("offload", False),
                            settings.get("offload_kv_cache", False))
        check_quantization(settings.get("quantize"))

    def _weights_device(self) -> str:
        return "cpu" if self.offload else self.device

    # -- adapters ---------------------------------------------------------------------------------------------
    def set_adapters(self, adapters: Sequence) -> None:
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
                self.transformer.to(self._weights_device())
            self._camera_adapter = camera_adapter
        self.camera_prompt = camera_prompt
        self._set(adapters)

    def _reload_base(self) -> None:
        """Only a camera adapter's token, which grows the tokenizer and the embedding table, takes the base anew."""
        components = self.family.load(self.model_name, dtype=self.dtype)
        components.transformer.to(self._weights_device())
        components.vae.to(self.device)
        self.components, self.transformer = components, components.transformer
        self._pristine.clear()
        self._merged.clear()
        self._camera_adapter = None

    def embedding_rows(self) -> int | None:
        return self.transformer.embed_tokens.num_embeddings

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
        else the first query image's size after the input resize (rounded down to the 16-px grid), else the model's
        default size (family.defaults) or its largest side when that is smaller."""
        step = self.components.vae_scale_factor * 2
        top = self.max_side()
        check_sides(height, width, step, top, self.model_name)
        if height is None or width is None:
            if images:
                limit = self.input_size_limit(max_input_image_size)
                w0, h0 = crop_image(as_image(images[0]), limit).size
            else:
                w0 = h0 = min(self.defaults.size, top)
            height, width = height or h0 // step * step, width or w0 // step * step
        return height, width

    def _sample(self, instruction, images, *, height, width, steps, guidance, image_guidance, seed, negative_prompt,
                camera, max_input_image_size, progress, on_step):
        extra = {}
        if camera is not None:
            instruction = self.camera_prompt.instruction(instruction, camera)
            if self.camera_prompt.encoding == "learned":
                extra["camera"] = list(camera)
        sampler = self.sampler(self.input_size_limit(max_input_image_size))
        latents = sampler.denoise(
            instruction, images, height=height, width=width, steps=steps, guidance=guidance,
            image_guidance=image_guidance, seed=seed, progress=progress,
            negative_prompt=NEGATIVE_PROMPT if negative_prompt is None else negative_prompt, on_step=on_step, **extra)
        return sampler.decode(latents)

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


def offload_layers(transformer: nn.Module, device: str) -> None:
    """diffusers' group offloading at block level: each OmniGenBlock's weights live in CPU memory and move to
    `device` just before the block runs (the next block prefetched on a side stream where `device` has streams);
    the embeddings, norms and output projection form one more group."""
    transformer.to("cpu")
    streams = torch.device(device).type == "cuda"
    transformer.enable_group_offload(onload_device=torch.device(device), offload_device=torch.device("cpu"),
                                     offload_type="block_level", num_blocks_per_group=1, use_stream=streams,
                                     non_blocking=streams)
