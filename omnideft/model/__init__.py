"""OmniGen through diffusers: loading (hub id, local dir or `tiny`), saving."""

from omnideft.model.loading import DEFAULT_MODEL_ID, OmniGenComponents, load_omnigen, save_base

__all__ = [
    "DEFAULT_MODEL_ID",
    "OmniGenComponents",
    "load_omnigen",
    "save_base",
]
