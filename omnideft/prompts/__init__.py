"""Multimodal prompt -> token ids with image placeholders, and the batch collator (mask, positions)."""

from omnideft.prompts.collate import collate_prompts
from omnideft.prompts.processor import (
    CFG_PROMPT,
    NEGATIVE_PROMPT,
    EncodedPrompt,
    OmniGenProcessor,
    crop_image,
    image_to_tensor,
)

__all__ = [
    "CFG_PROMPT",
    "NEGATIVE_PROMPT",
    "EncodedPrompt",
    "OmniGenProcessor",
    "collate_prompts",
    "crop_image",
    "image_to_tensor",
]
