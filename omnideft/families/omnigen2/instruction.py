"""Shard instructions (contract 1, OmniGen's `<img><|image_k|></img>` placeholders) in OmniGen2's wording: the
placeholder of image k becomes "the first image", "the second image", ... (OmniGen2's prompts read "Edit the first
image: add the man from the second image"), and image k becomes the k-th reference image of the transformer
(its `image_index_embedding[k - 1]`). OmniGen2 takes at most five reference images."""

from __future__ import annotations

from omnideft.families.omnigen2.model import check_reference_images
from omnideft.prompts.tags import reword_tags

ORDINALS = ("first", "second", "third", "fourth", "fifth")


def omnigen2_instruction(instruction: str, num_images: int, where: str = "instruction") -> str:
    """The instruction with each placeholder replaced by its ordinal wording. `num_images` is the number of input
    images the sample carries; more than five, or a placeholder naming a missing image, is a UserError naming
    `where` (e.g. the sample key)."""
    check_reference_images(num_images, "input images", where)
    return reword_tags(instruction, num_images, where, lambda k: f"the {ORDINALS[k - 1]} image")
