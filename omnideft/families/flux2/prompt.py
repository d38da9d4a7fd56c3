"""omnideft's in-context prompts in FLUX.2 [klein]'s wording.

omnideft's instructions (shards, `generate --example`, validation prompts) name input images with placeholders,
`<img><|image_k|></img>`; in-context examples come first (example k's input and output are images 2k-1 and 2k,
prompts/in_context.py), then the query's images. klein takes the same images as its reference images, in that order
(reference k sits at RoPE time offset 10 k: diffusers' `Flux2KleinPipeline._prepare_image_ids`), and its prompts name
them the way Black Forest Labs' editing guide does: "image 1", "image 2", ... So each placeholder becomes "image k":

    example 1: <img><|image_1|></img> becomes <img><|image_2|></img>. make it blue <img><|image_3|></img>
    -> example 1: image 1 becomes image 2. make it blue image 3

klein [4B/9B] takes at most four reference images (BFL's documentation), so one example pair and two query images,
or two pairs and nothing else.
"""

from __future__ import annotations

import re

from omnideft.errors import UserError
from omnideft.prompts.tags import reword_tags

MAX_REFERENCE_IMAGES = 4
PLACEHOLDER = re.compile(r"(?:<img>)?<\|image_(\d+)\|>(?:</img>)?")


def check_reference_images(count: int, what: str = "reference images", where: str = "") -> None:
    if count > MAX_REFERENCE_IMAGES:
        raise UserError(f"{where + ': ' if where else ''}{count} {what}; FLUX.2 [klein] takes at most "
                        f"{MAX_REFERENCE_IMAGES}")


def klein_prompt(instruction: str, num_images: int, where: str = "instruction") -> str:
    """The instruction with each placeholder replaced by "image k"; a placeholder naming a missing image, or more
    than four images, is one line naming `where`."""
    check_reference_images(num_images, "input images", where)
    return reword_tags(instruction, num_images, where, lambda k: f"image {k}", PLACEHOLDER)
