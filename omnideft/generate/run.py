"""`omnideft generate`: load base (+ adapter), compose the in-context prompt, sample, write PNG + contact sheet."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from omnideft.adapters import load_adapter
from omnideft.adapters.compose import merge_adapters, parse_adapter_arg
from omnideft.adapters.folder import read_adapter_meta
from omnideft.errors import UserError
from omnideft.generate.compose import compose_in_context
from omnideft.generate.contact_sheet import contact_sheet
from omnideft.generate.sampler import OmniGenSampler
from omnideft.images import load_image, save_image_atomic
from omnideft.model import load_omnigen


@dataclass
class GenerateRequest:
    prompt: str
    out: str
    model: str | None = None
    adapter: str | None = None
    adapters: list[str] = field(default_factory=list)  # "PATH[:weight]", several are merged into the base
    images: list[str] = field(default_factory=list)
    examples: list[tuple[str, str]] = field(default_factory=list)
    steps: int = 50
    guidance: float = 2.5
    image_guidance: float = 1.6
    seed: int = 0
    height: int | None = None
    width: int | None = None
    max_input_image_size: int = 1024
    device: str = "auto"
    dtype: str = "auto"
    sheet: str | None = None
    progress: bool = True


def resolve_model_name(model: str | None, adapter: str | None) -> str:
    """--model, else the base the adapter names. A local base that has moved together with its run folder is
    found as `base/` beside the adapter (the fingerprint check in load_adapter still guards the match)."""
    if model:
        return model
    if adapter:
        name = read_adapter_meta(adapter).get("base", {}).get("name")
        if name:
            sibling = Path(adapter).resolve().parent / "base"
            looks_local = name.startswith((".", "/")) or Path(name).exists() or name.count("/") != 1
            if looks_local and not Path(name).exists() and (sibling / "transformer").is_dir():
                return str(sibling)
            return name
    raise UserError("--model is required (the adapter does not name its base model)")


def run_generate(req: GenerateRequest) -> tuple[Path, Path]:
    device = ("cuda" if torch.cuda.is_available() else "cpu") if req.device == "auto" else req.device
    dtype = {"auto": torch.bfloat16 if device.startswith("cuda") else torch.float32, "fp32": torch.float32,
             "bf16": torch.bfloat16, "fp16": torch.float16}[req.dtype]
    query = [load_image(p) for p in req.images]
    pairs = [(load_image(a), load_image(b)) for a, b in req.examples]
    instruction, images = compose_in_context(req.prompt, query, pairs)
    adapters = [parse_adapter_arg(a) for a in ([req.adapter] if req.adapter else []) + list(req.adapters)]
    comps = load_omnigen(resolve_model_name(req.model, adapters[0][0] if adapters else None), dtype=dtype)
    transformer = comps.transformer
    if len(adapters) == 1 and adapters[0][1] == 1.0:
        transformer = load_adapter(transformer, adapters[0][0])
    elif adapters:
        transformer = merge_adapters(transformer, adapters)
    transformer.to(device)
    comps.vae.to(device)
    sampler = OmniGenSampler(transformer, comps.vae, comps.tokenizer, comps.scheduler, req.max_input_image_size)
    image = sampler(instruction, images, height=req.height, width=req.width, steps=req.steps, guidance=req.guidance,
                    image_guidance=req.image_guidance, seed=req.seed, progress=req.progress)
    out = save_image_atomic(image, req.out)
    sheet_path = Path(req.sheet) if req.sheet else out.with_name(out.stem + "_sheet.png")
    save_image_atomic(contact_sheet(pairs, query, image), sheet_path)
    return out, sheet_path
