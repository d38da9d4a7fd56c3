"""The `<img><|image_k|></img>` placeholder rule every family and verb checks a prompt against (generate, --jobs,
validation prompts, each family's prompt encoding)."""

from __future__ import annotations

from omnideft.data.format.schema import placeholder_mismatch
from omnideft.errors import UserError


def check_tags(tags: list[int], n_images: int) -> None:
    """Tags must be 1..n without gaps, n = number of images; the error names the missing or extra tags."""
    problem = placeholder_mismatch(tags, n_images)
    if problem:
        raise UserError("prompt " + problem)
