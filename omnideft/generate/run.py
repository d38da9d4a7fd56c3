"""`omnideft generate`: a Generator (base + adapters + camera encoder, generator.py) renders the request; writes PNG +
contact sheet, or with `--orbit` one frame per interpolated camera, written as GIF, strip and frames."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from omnideft.errors import UserError
from omnideft.generate.animation import write_orbit
from omnideft.generate.cameras import requested_cameras
from omnideft.generate.contact_sheet import contact_sheet
from omnideft.generate.generator import Generator
from omnideft.generate.omnigen2_generator import generation_family, omnigen_request, run_generate_omnigen2
from omnideft.images import load_image, save_image_atomic


@dataclass
class GenerateRequest:
    prompt: str
    out: str
    model: str | None = None
    adapters: list[str] = field(default_factory=list)  # "PATH[:weight]", several are merged into the base
    images: list[str] = field(default_factory=list)
    examples: list[tuple[str, str]] = field(default_factory=list)
    steps: int = 50
    guidance: float | None = None  # None: the family's default (OmniGen 2.5, OmniGen2 5.0)
    image_guidance: float | None = None  # None: the family's default (OmniGen 1.6, OmniGen2 2.0)
    negative_prompt: str | None = None  # None: OmniGen's default negative prompt
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
    orbit: list[str] | None = None  # two image names in camera_from, or (without it) two camera strings
    frames: int = 24
    fps: float = 8.0
    camera_encoding: str = "auto"  # auto | learned | text
    family: str = "auto"  # auto (from the base folder or the adapter) | omnigen | omnigen2
    scheduler: str = "euler"  # OmniGen2: euler | dpmsolver++
    cfg_range: tuple[float, float] = (0.0, 1.0)  # OmniGen2: fraction of the steps with guidance


def run_generate(req: GenerateRequest) -> dict[str, Path]:
    """Returns the written files by kind: image + sheet, or (orbit) gif, strip, frames and mp4 when possible."""
    if generation_family(req.model, req.family, req.adapters) == "omnigen2":  # OmniGen2 backend
        return run_generate_omnigen2(req)
    req = omnigen_request(req)
    cameras = requested_cameras(req.camera, req.camera_from, req.view, req.orbit, req.frames)
    if req.orbit and not req.fps > 0:
        raise UserError(f"--fps {req.fps} must be > 0")
    query = [load_image(p) for p in req.images]
    pairs = [(load_image(a), load_image(b)) for a, b in req.examples]
    adapters = list(req.adapters)
    generator = Generator.from_pretrained(req.model, adapters, device=req.device, dtype=req.dtype,
                                          camera_encoding=req.camera_encoding)

    def render(camera):
        return generator(req.prompt, query, pairs, seed=req.seed, height=req.height, width=req.width,
                         steps=req.steps, guidance=req.guidance, image_guidance=req.image_guidance,
                         negative_prompt=req.negative_prompt, camera=camera,
                         max_input_image_size=req.max_input_image_size, progress=req.progress)[0]

    if req.orbit:
        # One seed for every frame: the camera is the only thing that changes along the orbit.
        return write_orbit([render(v) for v in cameras], req.out, req.fps)
    image = render(cameras[0] if cameras else None)
    out = save_image_atomic(image, req.out)
    sheet_path = Path(req.sheet) if req.sheet else out.with_name(out.stem + "_sheet.png")
    save_image_atomic(contact_sheet(pairs, query, image), sheet_path)
    return {"image": out, "contact sheet": sheet_path}
