"""`omnideft generate`: load base (+ adapter, + its camera encoder), compose the in-context prompt, sample, write PNG +
contact sheet; with `--orbit`, one frame per interpolated camera, written as GIF, strip and frames."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from omnideft.adapters import load_adapter
from omnideft.adapters.compose import merge_adapters, parse_adapter_arg
from omnideft.adapters.folder import resolve_model_name
from omnideft.camera.conditioning import load_camera, read_camera_config
from omnideft.errors import UserError
from omnideft.generate.animation import write_orbit
from omnideft.generate.cameras import camera_prompt_for, requested_cameras
from omnideft.generate.contact_sheet import contact_sheet
from omnideft.generate.sampler import OmniGenSampler
from omnideft.images import load_image, save_image_atomic
from omnideft.model import load_omnigen
from omnideft.prompts.in_context import compose_in_context


@dataclass
class GenerateRequest:
    prompt: str
    out: str
    model: str | None = None
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
    camera: str | None = None  # "f,cx,cy,k,qw,qx,qy,qz,tx,ty,tz" or named fields (docs/camera.md)
    camera_from: str | None = None  # COLMAP sparse model dir
    view: str | None = None  # image name in camera_from
    orbit: list[str] | None = None  # two image names in camera_from
    frames: int = 24
    fps: float = 8.0
    camera_encoding: str = "auto"  # auto | learned | text


def run_generate(req: GenerateRequest) -> dict[str, Path]:
    """Returns the written files by kind: image + sheet, or (orbit) gif, strip, frames and mp4 when possible."""
    device = ("cuda" if torch.cuda.is_available() else "cpu") if req.device == "auto" else req.device
    dtype = {"auto": torch.bfloat16 if device.startswith("cuda") else torch.float32, "fp32": torch.float32,
             "bf16": torch.bfloat16, "fp16": torch.float16}[req.dtype]
    cameras = requested_cameras(req.camera, req.camera_from, req.view, req.orbit, req.frames)
    if req.orbit and not req.fps > 0:
        raise UserError(f"--fps {req.fps} must be > 0")
    adapters = [parse_adapter_arg(a) for a in req.adapters]
    first = adapters[0][0] if adapters else None  # the camera conditioning comes with the first adapter
    camera_config = read_camera_config(first) if first else None
    camera_prompt = camera_prompt_for(camera_config, req.camera_encoding, first) if cameras else None
    query = [load_image(p) for p in req.images]
    pairs = [(load_image(a), load_image(b)) for a, b in req.examples]
    instruction, images = compose_in_context(req.prompt, query, pairs)
    comps = load_omnigen(resolve_model_name(req.model, first), dtype=dtype)
    transformer = comps.transformer
    if first:  # camera first: it may grow the embedding table the adapter was saved with
        load_camera(transformer, comps.tokenizer, first)
    if len(adapters) == 1 and adapters[0][1] == 1.0:
        transformer = load_adapter(transformer, adapters[0][0])
    elif adapters:
        transformer = merge_adapters(transformer, adapters)
    transformer.to(device)
    comps.vae.to(device)
    sampler = OmniGenSampler(transformer, comps.vae, comps.tokenizer, comps.scheduler, req.max_input_image_size)

    def render(vector, seed: int):
        text = camera_prompt.instruction(instruction, vector) if vector is not None else instruction
        learned = vector is not None and camera_prompt.encoding == "learned"
        return sampler(text, images, height=req.height, width=req.width, steps=req.steps, guidance=req.guidance,
                       image_guidance=req.image_guidance, seed=seed, progress=req.progress,
                       camera=vector if learned else None)

    if req.orbit:
        # One seed for every frame: the camera is the only thing that changes along the orbit.
        return write_orbit([render(v, req.seed) for v in cameras], req.out, req.fps)
    image = render(cameras[0] if cameras else None, req.seed)
    out = save_image_atomic(image, req.out)
    sheet_path = Path(req.sheet) if req.sheet else out.with_name(out.stem + "_sheet.png")
    save_image_atomic(contact_sheet(pairs, query, image), sheet_path)
    return {"image": out, "contact sheet": sheet_path}
