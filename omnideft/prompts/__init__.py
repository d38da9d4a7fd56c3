"""Multimodal prompt -> token ids with image placeholders, the batch collator (mask, positions), and in-context
instructions (example pairs, then the query)."""

from omnideft.prompts.collate import collate_prompts
from omnideft.prompts.in_context import compose_in_context, example_clause
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
    "compose_in_context",
    "crop_image",
    "example_clause",
    "image_to_tensor",
]
