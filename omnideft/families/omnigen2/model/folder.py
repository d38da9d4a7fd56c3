"""Load and save OmniGen2 in the published folder layout (`OmniGen2/OmniGen2` on the hub): transformer/ (config.json
+ safetensors, published parameter names), vae/ (diffusers AutoencoderKL), mllm/ (transformers
Qwen2_5_VLForConditionalGeneration), processor/ (its tokenizer files), scheduler/ (scheduler_config.json) and
model_index.json naming OmniGen2Pipeline. `tiny` builds the preset from a seed instead.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import torch

from omnideft.errors import UserError
from omnideft.files import atomic_path, write_text_atomic
from omnideft.model.presets import TINY

# The published class names, written into the saved configs so the official package reads our folders too.
PUBLISHED_CLASSES = {
    "transformer": ["transformer_omnigen2", "OmniGen2Transformer2DModel"],
    "scheduler": ["scheduling_flow_match_euler_discrete", "FlowMatchEulerDiscreteScheduler"],
    "vae": ["diffusers", "AutoencoderKL"],
    "mllm": ["transformers", "Qwen2_5_VLForConditionalGeneration"],
    "processor": ["transformers", "Qwen2_5_VLProcessor"],
}


@dataclass
class OmniGen2Components:
    transformer: torch.nn.Module
    vae: torch.nn.Module
    mllm: torch.nn.Module
    tokenizer: object
    scheduler: object
    name: str  # what the user asked for: "tiny" or a directory

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)


def load_omnigen2(name: str, *, dtype: torch.dtype = torch.float32, seed: int = 0) -> OmniGen2Components:
    """`name` is "tiny" (random, from `seed`) or a local folder in the published layout. The VAE and the MLLM stay
    fp32 on CPU; the transformer takes `dtype`. Every component is frozen (adapters make their own parameters)."""
    with _built_whole():
        if name == TINY:
            from omnideft.families.omnigen2.model.tiny import build_tiny_omnigen2

            transformer, vae, mllm, tokenizer, scheduler = build_tiny_omnigen2(seed)
        else:
            transformer, vae, mllm, tokenizer, scheduler = _load_folder(name)
    if transformer.dtype != dtype:
        transformer.to(dtype)
    for part in (transformer, vae, mllm):
        part.requires_grad_(False)
        part.eval()
    return OmniGen2Components(transformer, vae, mllm, tokenizer, scheduler, name)


@contextmanager
def _built_whole():
    """Under DeepSpeed ZeRO-3, accelerate registers its config with transformers, which then builds models
    partitioned (deepspeed.zero.Init: empty tensors on every rank; the tiny MLLM's init fails on them). The MLLM is
    frozen and runs outside the training engine, so it is built whole; the transformer is diffusers' and never
    affected. Reads transformers' registered config (a private weak reference: it has no public getter)."""
    from transformers.integrations import deepspeed as hf_deepspeed

    registered = hf_deepspeed._hf_deepspeed_config_weak_ref
    hf_deepspeed.unset_hf_deepspeed_config()
    try:
        yield
    finally:
        if registered is not None and registered() is not None:
            hf_deepspeed.set_hf_deepspeed_config(registered())


def _load_folder(name: str):
    from diffusers import AutoencoderKL
    from transformers import AutoTokenizer, Qwen2_5_VLForConditionalGeneration

    from omnideft.families.omnigen2.model.scheduler import OmniGen2FlowScheduler
    from omnideft.families.omnigen2.model.transformer import OmniGen2Transformer

    path = Path(name)
    if not path.is_dir():
        raise UserError(f"model {name!r} is neither 'tiny' nor a local OmniGen2 folder")
    missing = [sub for sub in PUBLISHED_CLASSES if not (path / sub).is_dir()]  # the published layout's parts
    if missing:
        raise UserError(f"{name} is not a complete OmniGen2 folder: missing {', '.join(missing)}/")
    try:
        transformer = OmniGen2Transformer.from_pretrained(path / "transformer")
        vae = AutoencoderKL.from_pretrained(path / "vae")
        mllm = Qwen2_5_VLForConditionalGeneration.from_pretrained(path / "mllm", dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(path / "processor")
        scheduler = OmniGen2FlowScheduler.from_config(OmniGen2FlowScheduler.load_config(path / "scheduler"))
    except (OSError, ValueError, RuntimeError) as exc:
        raise UserError(f"cannot load OmniGen2 from {name}: {str(exc).splitlines()[0]}") from None
    return transformer, vae, mllm, tokenizer, scheduler


def _publish_class(config_file: Path, class_name: str) -> None:
    config = json.loads(config_file.read_text())
    config["_class_name"] = class_name
    write_text_atomic(config_file, json.dumps(config, indent=2, sort_keys=True) + "\n")


def save_omnigen2(components: OmniGen2Components, out_dir: str | Path, overwrite: bool = False) -> Path:
    """Write the published layout; the folder appears complete or not at all (omnideft.files.atomic_path). An
    existing folder holding files is replaced only with `overwrite` (the trainer's saved tiny base)."""
    out = Path(out_dir)
    with atomic_path(out, replace=overwrite) as tmp:
        components.transformer.save_pretrained(tmp / "transformer", safe_serialization=True)
        _publish_class(tmp / "transformer" / "config.json", PUBLISHED_CLASSES["transformer"][1])
        components.vae.save_pretrained(tmp / "vae", safe_serialization=True)
        components.mllm.save_pretrained(tmp / "mllm", safe_serialization=True)
        components.tokenizer.save_pretrained(tmp / "processor")
        components.scheduler.save_config(tmp / "scheduler")
        _publish_class(tmp / "scheduler" / "scheduler_config.json", PUBLISHED_CLASSES["scheduler"][1])
        index = {"_class_name": "OmniGen2Pipeline", "_diffusers_version": version("diffusers"), **PUBLISHED_CLASSES}
        (tmp / "model_index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    return out
