"""Load the base (+ adapters) once and render jobs with fixed seeds; nothing is loaded when every image exists.

Loading and sampling are `omnideft generate`'s (omnideft.generate.Generator): the first adapter brings its camera
conditioning, several (or weighted) adapters are merged into the base.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from PIL import Image

from omnideft.families.generator import FamilyGenerator as BaseGenerator
from omnideft.families.generator import family_for
from omnideft.families.registry import AUTO


@dataclass
class GenerationSettings:
    model: str | None
    adapters: list[str] = field(default_factory=list)  # PATH[:WEIGHT]
    steps: int | None = None  # None: the family's default for the model (family.defaults)
    guidance: float | None = None
    image_guidance: float | None = None
    height: int | None = None
    width: int | None = None
    max_input_image_size: int = 1024
    device: str = "auto"
    dtype: str = "auto"
    family: str = AUTO  # which family the model name means (--family); resolved() records the one it means


def resolved(settings: GenerationSettings) -> GenerationSettings:
    """Every setting left unset as the family's default for the model (what the run records); nothing loads."""
    family, name = family_for(settings.model, settings.adapters, settings.family)
    d = family.defaults(name)

    def pick(value, default):
        return default if value is None else value

    return replace(settings, steps=pick(settings.steps, d.steps), guidance=pick(settings.guidance, d.guidance),
                   image_guidance=pick(settings.image_guidance, d.image_guidance),
                   height=pick(settings.height, d.size), width=pick(settings.width, d.size), family=family.name)


class Generator:
    """omnideft.generate.Generator, loaded on first use (a resumed run whose images all exist loads nothing)."""

    def __init__(self, settings: GenerationSettings):
        self.settings = settings
        self.generator: BaseGenerator | None = None

    def render(self, instruction: str, images: list[Image.Image], size: tuple[int, int] | None,
               seed: int) -> Image.Image:
        s = self.settings
        if self.generator is None:
            self.generator = BaseGenerator.from_pretrained(s.model, s.adapters, device=s.device, dtype=s.dtype,
                                                          family=s.family)
        width, height = size or (s.width, s.height)
        # A shard's instruction already numbers every image: composed with no examples it stays as it is.
        return self.generator(instruction, images, seed=seed, height=height, width=width, steps=s.steps,
                              guidance=s.guidance, image_guidance=s.image_guidance,
                              max_input_image_size=s.max_input_image_size)[0]
