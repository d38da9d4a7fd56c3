"""Shard instructions (contract 1, OmniGen's `<img><|image_k|></img>` placeholders) in OmniGen2's wording: the
placeholder of image k becomes "the first image", "the second image", ... (OmniGen2's prompts read "Edit the first
image: add the man from the second image"), and image k becomes the k-th reference image of the transformer
(its `image_index_embedding[k - 1]`). OmniGen2 takes at most five reference images."""

from __future__ import annotations

import re

from omnideft.errors import UserError
from omnideft.families.omnigen2.model import check_reference_images

ORDINALS = ("first", "second", "third", "fourth", "fifth")
PLACEHOLDER = re.compile(r"<img><\|image_(\d+)\|></img>")


def omnigen2_instruction(instruction: str, num_images: int, where: str = "instruction") -> str:
    """The instruction with each placeholder replaced by its ordinal wording. `num_images` is the number of input
    images the sample carries; more than five, or a placeholder naming a missing image, is a UserError naming
    `where` (e.g. the sample key)."""
    check_reference_images(num_images, "input images", where)

    def wording(match: re.Match) -> str:
        k = int(match.group(1))
        if not 1 <= k <= num_images:
            raise UserError(f"{where}: <|image_{k}|> but the sample has {num_images} input image(s)")
        return f"the {ORDINALS[k - 1]} image"

    return re.sub(r"\s+", " ", PLACEHOLDER.sub(wording, instruction)).strip()
