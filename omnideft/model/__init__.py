"""OmniGen through diffusers: loading (hub id, local dir or `tiny`), saving, target-module presets."""

from omnideft.model.loading import DEFAULT_MODEL_ID, OmniGenComponents, load_omnigen, save_base
from omnideft.model.targets import TARGET_PRESETS, target_module_names

__all__ = [
    "DEFAULT_MODEL_ID",
    "OmniGenComponents",
    "load_omnigen",
    "save_base",
    "TARGET_PRESETS",
    "target_module_names",
]
