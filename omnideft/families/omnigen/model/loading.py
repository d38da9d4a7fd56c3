"""Load OmniGen's four components from a hub id, a local diffusers folder, or a preset (`tiny`: random;
`small`: pretrained, shipped in the package); save a base."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import torch

from omnideft.errors import UserError
from omnideft.families.omnigen.model.small import SMALL, small_model_dir
from omnideft.files import atomic_path
from omnideft.model.presets import TINY

DEFAULT_MODEL_ID = "Shitao/OmniGen-v1-diffusers"


@dataclass
class OmniGenComponents:
    transformer: torch.nn.Module
    vae: torch.nn.Module
    tokenizer: object
    scheduler: object
    name: str  # what the user asked for: hub id, directory, "tiny" or "small"

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)


def load_omnigen(name: str = DEFAULT_MODEL_ID, *, revision: str | None = None, dtype: torch.dtype = torch.float32,
                 seed: int = 0, quantize: str | None = None) -> OmniGenComponents:
    """`name` is "tiny" (random, from `seed`), "small" (the shipped pretrained preset, its files checked against
    their sha256 first), a local directory in diffusers layout, or a hub id (needs the network or the HF cache).
    `quantize` stores the frozen transformer as bf16, int8, fp8 or nf4 (model/quantize.py); None keeps `dtype`."""
    # diffusers and transformers (~10 s to import on a small machine) load only when a model does: this package is
    # also imported for its target presets (adapters) and by commands that load no model.
    if name == TINY:
        from omnideft.families.omnigen.model.tiny import build_tiny

        transformer, vae, tokenizer, scheduler = build_tiny(seed)
    elif name == SMALL:
        transformer, vae, tokenizer, scheduler = _load_diffusers_layout(str(small_model_dir()), None)
    else:
        transformer, vae, tokenizer, scheduler = _load_diffusers_layout(name, revision)
    if transformer.dtype != dtype:
        transformer.to(dtype)
    if vae.dtype != torch.float32:
        vae.to(torch.float32)  # the VAE stays fp32: SDXL's VAE overflows in half precision
    transformer.requires_grad_(False)
    vae.requires_grad_(False)
    if quantize is not None:
        from omnideft.model.quantize import quantize_base

        quantize_base(transformer, quantize)
    return OmniGenComponents(transformer, vae, tokenizer, scheduler, name)


def _load_diffusers_layout(name: str, revision: str | None):
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, OmniGenTransformer2DModel  # see load_omnigen
    from transformers import AutoTokenizer

    path = Path(name)
    if path.exists():
        missing = [sub for sub in ("transformer", "vae", "tokenizer", "scheduler") if not (path / sub).is_dir()]
        if missing:
            if (path / "model.safetensors").exists() or (path / "model.pt").exists():
                raise UserError(f"{name} is an original-format OmniGen checkpoint; convert it first: "
                                f"omnideft convert-original {name} OUT_DIR")
            raise UserError(f"{name} is not a diffusers OmniGen folder: missing {', '.join(missing)}/")
        src, kw = str(path), {}
    else:
        if "/" not in name:
            raise UserError(f"model {name!r} is neither 'tiny', a local directory, nor a hub id (owner/name)")
        src, kw = name, {"revision": revision}
    try:
        transformer = OmniGenTransformer2DModel.from_pretrained(src, subfolder="transformer", **kw)
        vae = AutoencoderKL.from_pretrained(src, subfolder="vae", **kw)
        tokenizer = AutoTokenizer.from_pretrained(src, subfolder="tokenizer", **kw)
        scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(src, subfolder="scheduler", **kw)
    except (OSError, ValueError) as exc:
        if path.exists():
            raise UserError(f"cannot load OmniGen from {name}: {str(exc).splitlines()[0]}") from None
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        raise UserError(
            f"model {name!r} is not in the local Hugging Face cache; it needs the network"
            + (" (HF_HUB_OFFLINE=1 is set)" if offline else "")
            + " or a local directory in diffusers layout"
        ) from None
    return transformer, vae, tokenizer, scheduler


def save_base(components: OmniGenComponents, out_dir: str | Path, overwrite: bool = False) -> Path:
    """Write the diffusers folder layout (transformer/, vae/, tokenizer/, scheduler/) plus model_index.json; the
    folder appears complete or not at all (omnideft.files.atomic_path), as OmniGen2's save_omnigen2. A folder holding
    files is replaced only with `overwrite` (the trainer's saved tiny base)."""
    out = Path(out_dir)
    with atomic_path(out, replace=overwrite) as tmp:
        _write_base(components, tmp)
    return out


def _write_base(components: OmniGenComponents, out: Path) -> None:
    out.mkdir(parents=True)
    components.transformer.save_pretrained(out / "transformer", safe_serialization=True)
    components.vae.save_pretrained(out / "vae", safe_serialization=True)
    components.tokenizer.save_pretrained(out / "tokenizer")
    components.scheduler.save_pretrained(out / "scheduler")
    index = {
        "_class_name": "OmniGenPipeline",
        "_diffusers_version": version("diffusers"),
        "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
        "tokenizer": ["transformers", type(components.tokenizer).__name__],
        "transformer": ["diffusers", "OmniGenTransformer2DModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    (out / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")

