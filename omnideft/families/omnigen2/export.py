"""OmniGen2's LoRA key rules for export (family.lora_keys): its published module names are ComfyUI's own
(comfy/ldm/omnigen/omnigen2.py), and ComfyUI's OmniGen2 LoRA branch reads the bare module paths; kohya takes the same
paths (export adds `lora_unet_`)."""

from __future__ import annotations


def lora_keys(fmt: str, factors: dict, transformer) -> dict:
    return dict(factors)
