"""One generation of a protocol: what to prompt the model with, what to score the result against."""

from __future__ import annotations

from dataclasses import dataclass, field

from PIL import Image


@dataclass
class Job:
    id: str  # file stem of the generated image, unique in a run
    group: str  # table row: task, subject, ...
    instruction: str
    metrics: tuple[str, ...]
    inputs: list[Image.Image] = field(default_factory=list)  # query images in placeholder order
    size: tuple[int, int] | None = None  # (width, height) to generate; None = the run's --width/--height
    refs: list[Image.Image] = field(default_factory=list)
    ref_ids: list[str] = field(default_factory=list)  # stems under refs/ (shared references are written once)
    cond: Image.Image | None = None
    prompt: str | None = None  # text for clip_t
