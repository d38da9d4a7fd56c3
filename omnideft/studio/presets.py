"""A held-out sample as a studio preset: in-context example pairs, query images, prompt, camera and true target.

A sample whose instruction is the in-context layout `omnideft generate` composes (prompts/in_context.py: "example k:
<img><|image_a|></img> becomes <img><|image_b|></img>." per pair, then the query) is split into example rows, query
images and the query's own prompt; composing them again gives the sample's instruction exactly. Any other layout
(VisualCloze's grid sentences, several conditions per row) is kept verbatim: all its images become input images and
the instruction the prompt, which is the same model input.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from omnideft.camera.record import record_vector
from omnideft.data.format.schema import TAG_RE
from omnideft.data.shards import Example
from omnideft.images import save_image_atomic
from omnideft.prompts.in_context import compose_in_context, example_clause
from omnideft.studio.catalog import camera_string

EXAMPLE_ROLES = ("example_condition", "example_output")


@dataclass
class Preset:
    task: str
    key: str
    prompt: str
    examples: list[tuple[Path, Path]] = field(default_factory=list)
    images: list[Path] = field(default_factory=list)  # query images: <|image_1|>, <|image_2|>, ...
    target: Path | None = None
    camera: str | None = None
    note: str = ""


def split_in_context(instruction: str, inputs: list, roles: list) -> tuple[str, list[tuple], list]:
    """(query prompt, example pairs, query images) such that compose_in_context gives `instruction` back; when
    the sample is not in that layout, ("instruction", [], all inputs)."""
    pairs = 0
    while roles[2 * pairs: 2 * pairs + 2] == list(EXAMPLE_ROLES):
        pairs += 1
    flat = _spaces(instruction)
    prefix = " ".join(example_clause(i) for i in range(pairs))
    if pairs and flat.startswith(prefix):
        shift = 2 * pairs
        rest = flat[len(prefix):].strip()
        if all(int(m.group(1)) > shift for m in TAG_RE.finditer(rest)):
            prompt = TAG_RE.sub(lambda m: f"<|image_{int(m.group(1)) - shift}|>", rest)
            examples = [(inputs[2 * i], inputs[2 * i + 1]) for i in range(pairs)]
            query = inputs[shift:]
            if compose_in_context(prompt, query, examples)[0] == flat:
                return prompt, examples, query
    return flat, [], list(inputs)


def _spaces(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def preset_from_example(example: Example, folder: Path) -> Preset:
    """Split `example` and write its images as PNG files under `folder` (the app hands paths to its widgets)."""
    roles = [entry.get("role") for entry in example.meta.get("inputs", [])]
    prompt, pairs, query = split_in_context(example.instruction, example.inputs, roles)
    base = folder / example.key

    def save(img: Image.Image, name: str) -> Path:
        return save_image_atomic(img, base / f"{name}.png")

    preset = Preset(task=example.task, key=example.key, prompt=prompt,
                    examples=[(save(a, f"example{i + 1}_in"), save(b, f"example{i + 1}_out"))
                              for i, (a, b) in enumerate(pairs)],
                    images=[save(img, f"query{i + 1}") for i, img in enumerate(query)],
                    target=save(example.output, "target"))
    if pairs:
        preset.note = f"{len(pairs)} example pair(s) and {len(query)} query image(s)"
    else:
        preset.note = f"instruction kept as written, its {len(query)} image(s) as input images"
    if example.camera:
        preset.camera = camera_string(record_vector(example.camera))
    return preset
