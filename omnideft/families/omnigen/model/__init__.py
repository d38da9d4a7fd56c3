"""OmniGen (v1) through diffusers: loading (hub id, local dir, `tiny` or the shipped `small`), saving."""

from omnideft.families.omnigen.model.loading import DEFAULT_MODEL_ID, OmniGenComponents, load_omnigen, save_base

__all__ = [
    "DEFAULT_MODEL_ID",
    "OmniGenComponents",
    "load_omnigen",
    "save_base",
]
