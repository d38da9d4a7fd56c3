"""The `<img><|image_k|></img>` placeholder rule every family and verb checks a prompt against (generate, --jobs,
validation prompts, each family's prompt encoding)."""

from __future__ import annotations

import re
from typing import Callable

from omnideft.data.format.schema import placeholder_mismatch
from omnideft.errors import UserError

TAG = re.compile(r"<img><\|image_(\d+)\|></img>")


def check_tags(tags: list[int], n_images: int) -> None:
    """Tags must be 1..n without gaps, n = number of images; the error names the missing or extra tags."""
    problem = placeholder_mismatch(tags, n_images)
    if problem:
        raise UserError("prompt " + problem)


def reword_tags(instruction: str, num_images: int, where: str, wording: Callable[[int], str],
                pattern: re.Pattern = TAG) -> str:
    """The instruction as a family's own prompt words it: each placeholder (`pattern`, group 1 = k) replaced by
    `wording(k)` (the family's name for its k-th input image, e.g. "the first image"), runs of whitespace made one
    space. A placeholder naming a missing image is one line naming `where` (e.g. the sample key)."""
    def replace(match: re.Match) -> str:
        k = int(match.group(1))
        if not 1 <= k <= num_images:
            raise UserError(f"{where}: <|image_{k}|> but there are {num_images} input image(s)")
        return wording(k)

    return re.sub(r"\s+", " ", pattern.sub(replace, instruction)).strip()
