"""Load the base (+ adapters) once and render jobs with fixed seeds; nothing is loaded when every image exists.

Loading follows `omnideft generate`: the first adapter brings its camera conditioning, one adapter at weight 1 is
attached through PEFT, several (or weighted) adapters are merged into the base.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from PIL import Image

from omnideft.adapters import load_adapter
from omnideft.adapters.compose import merge_adapters, parse_adapter_arg
from omnideft.camera.conditioning import load_camera
from omnideft.adapters.folder import resolve_model_name
from omnideft.generate.sampler import OmniGenSampler
from omnideft.model import load_omnigen


@dataclass
class GenerationSettings:
    model: str | None
    adapters: list[str] = field(default_factory=list)  # PATH[:WEIGHT]
    steps: int = 50
    guidance: float = 2.5
    image_guidance: float = 1.6
    height: int = 1024
    width: int = 1024
    max_input_image_size: int = 1024
    device: str = "auto"
    dtype: str = "auto"

    def resolved_device(self) -> str:
        return ("cuda" if torch.cuda.is_available() else "cpu") if self.device == "auto" else self.device


class Generator:
    def __init__(self, settings: GenerationSettings):
        self.settings = settings
        self.sampler: OmniGenSampler | None = None

    def _load(self) -> OmniGenSampler:
        s = self.settings
        device = s.resolved_device()
        dtype = {"auto": torch.bfloat16 if device.startswith("cuda") else torch.float32, "fp32": torch.float32,
                 "bf16": torch.bfloat16, "fp16": torch.float16}[s.dtype]
        adapters = [parse_adapter_arg(a) for a in s.adapters]
        first = adapters[0][0] if adapters else None
        comps = load_omnigen(resolve_model_name(s.model, first), dtype=dtype)
        transformer = comps.transformer
        if first:
            load_camera(transformer, comps.tokenizer, first)
        if len(adapters) == 1 and adapters[0][1] == 1.0:
            transformer = load_adapter(transformer, adapters[0][0])
        elif adapters:
            transformer = merge_adapters(transformer, adapters)
        transformer.to(device)
        comps.vae.to(device)
        return OmniGenSampler(transformer, comps.vae, comps.tokenizer, comps.scheduler, s.max_input_image_size)

    def render(self, instruction: str, images: list[Image.Image], size: tuple[int, int] | None,
               seed: int) -> Image.Image:
        if self.sampler is None:
            self.sampler = self._load()
        s = self.settings
        width, height = size or (s.width, s.height)
        return self.sampler(instruction, images, height=height, width=width, steps=s.steps, guidance=s.guidance,
                            image_guidance=s.image_guidance, seed=seed)
