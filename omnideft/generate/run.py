"""`omnideft generate`: a Generator (base + adapters + camera encoder, generator.py) renders the request; writes PNG +
contact sheet, or with `--orbit` one frame per interpolated camera, written as GIF, strip and frames, or with
`--jobs` every line of a JSONL file (jobs.py)."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

from omnideft.errors import UserError
from omnideft.families.family import GenerationDefaults, ModelFamily
from omnideft.families.generator import (
    FamilyGenerator,
    as_adapter_list,
    family_for,
    family_options,
    refuse_settings,
    resolve_device,
    resolve_dtype,
)
from omnideft.generate.animation import write_orbit
from omnideft.generate.cameras import requested_cameras
from omnideft.generate.contact_sheet import contact_sheet
from omnideft.generate.jobs import REPORT, Job, run_jobs
from omnideft.generate.settings import check_number, check_seeds
from omnideft.images import load_image, save_image_atomic


@dataclass
class GenerateRequest:
    prompt: str | None
    out: str
    model: str | None = None
    adapters: list[str] = field(default_factory=list)  # "PATH[:weight]", several are merged into the base
    images: list[str] = field(default_factory=list)
    examples: list[tuple[str, str]] = field(default_factory=list)
    steps: int | None = None  # None: the family's default for the model (family.defaults)
    guidance: float | None = None  # None: the family's default
    image_guidance: float | None = None  # None: the family's default
    negative_prompt: str | None = None  # None: the family's default negative prompt
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
    merge: bool = True  # adapters folded into the base; False: one adapter kept as separate layers
    kv_cache: bool = True
    separate_cfg: bool = False
    offload: bool = False  # CUDA only
    offload_kv_cache: bool = False  # CUDA only
    quantize: str | None = None  # base storage: bf16 | int8 | fp8 | nf4 (CUDA); None = as loaded
    jobs: str | None = None  # JSONL file: batch mode, `out` is then a folder
    overwrite: bool = False  # jobs: render every line again into a folder made with other settings
    family: str = "auto"  # auto (from the base folder or the adapter) or a family's name
    options: dict = field(default_factory=dict)  # the family's own settings by name (family.generate_options)

    def settings(self) -> dict:
        """The generator settings (families/generator.py SETTINGS) as asked."""
        return dict(camera_encoding=self.camera_encoding, merge=self.merge, kv_cache=self.kv_cache,
                    separate_cfg=self.separate_cfg, offload=self.offload, offload_kv_cache=self.offload_kv_cache,
                    quantize=self.quantize)


    def load_generator(self) -> FamilyGenerator:
        return FamilyGenerator.from_pretrained(self.model, list(self.adapters), device=self.device,
                                               dtype=self.dtype, family=self.family, **self.settings())


SINGLE_ONLY = {"prompt": "--prompt", "images": "--image", "examples": "--example", "sheet": "--sheet",
               "camera": "--camera", "camera_from": "--camera-from", "view": "--view", "orbit": "--orbit"}
CHECKED_NUMBERS = ("steps", "seed", "height", "width", "guidance", "image_guidance", "max_input_image_size")


def check_request(req: GenerateRequest) -> None:
    """What can be checked before anything is read or loaded. Numbers take the ranges a jobs line is held to too
    (settings.NUMBER_BOUNDS)."""
    for key in CHECKED_NUMBERS:
        value = getattr(req, key)
        if value is not None:
            check_number(key, value, "--" + key.replace("_", "-"))
    if req.overwrite and not req.jobs:
        raise UserError("--overwrite is for --jobs (a single image is always written anew)")
    if req.jobs:
        given = [flag for name, flag in SINGLE_ONLY.items() if getattr(req, name)]
        if given:
            raise UserError(f"--jobs takes prompts, images, examples and cameras from {req.jobs}; leave out "
                            f"{', '.join(given)}")
        return
    if not req.prompt:
        raise UserError("--prompt is required (or --jobs FILE.jsonl for a batch)")
    if Path(req.out).is_dir():
        raise UserError(f"--out {req.out} is a folder; give the output file, e.g. {Path(req.out) / 'out.png'}")


def run_generate(req: GenerateRequest) -> dict[str, Path]:
    """Returns the written files by kind: image + sheet, or (orbit) gif, strip, frames and mp4 when possible, or
    (jobs) the output folder and the report. What the base's family lacks is refused before anything loads."""
    check_request(req)
    family, name = family_for(req.model, req.adapters, req.family)
    refuse_settings(family, req.settings())
    options = family_options(family, req.options)
    if req.jobs:
        return _run_jobs(req, family, family.defaults(name), options)
    camera_flags = [flag for flag, value in (("--camera", req.camera), ("--camera-from", req.camera_from),
                                             ("--view", req.view), ("--orbit", req.orbit)) if value]
    if camera_flags:
        family.refuse("camera", camera_flags[0])
    family.check_input_images(len(req.images) + 2 * len(req.examples), f"reference images ({len(req.images)} "
                              f"query + {len(req.examples)} example pairs x 2)")
    cameras = requested_cameras(req.camera, req.camera_from, req.view, req.orbit, req.frames)
    if req.orbit and not req.fps > 0:
        raise UserError(f"--fps {req.fps} must be > 0")
    query = [load_image(p) for p in req.images]
    pairs = [(load_image(a), load_image(b)) for a, b in req.examples]
    generator = req.load_generator()

    def render(camera):
        return generator(req.prompt, query, pairs, seed=req.seed, height=req.height, width=req.width,
                         steps=req.steps, guidance=req.guidance, image_guidance=req.image_guidance,
                         negative_prompt=req.negative_prompt, camera=camera,
                         max_input_image_size=req.max_input_image_size, progress=req.progress, **options)[0]

    if req.orbit:
        # One seed for every frame: the camera is the only thing that changes along the orbit.
        return write_orbit([render(v) for v in cameras], req.out, req.fps)
    image = render(cameras[0] if cameras else None)
    out = save_image_atomic(image, req.out)
    sheet_path = Path(req.sheet) if req.sheet else out.with_name(out.stem + "_sheet.png")
    save_image_atomic(contact_sheet(pairs, query, image), sheet_path)
    return {"image": out, "contact sheet": sheet_path}


def _run_jobs(req: GenerateRequest, family: ModelFamily, defaults: GenerationDefaults,
              options: dict) -> dict[str, Path]:
    # A setting left unset is the family's default for the model: resolved here, so run.json records the values
    req = replace(req, steps=defaults.steps if req.steps is None else req.steps,
                  guidance=defaults.guidance if req.guidance is None else req.guidance,
                  image_guidance=defaults.image_guidance if req.image_guidance is None else req.image_guidance)

    def render(generator: FamilyGenerator, job: Job) -> list:
        if job.seed is None:  # a line's own seed was checked with its n when read
            check_seeds(req.seed, job.n, "--seed")
        if job.camera is not None:
            family.refuse("camera", "'camera'")
        return generator(job.prompt, job.images, job.examples, seed=req.seed if job.seed is None else job.seed,
                         n=job.n, height=job.height or req.height, width=job.width or req.width, steps=req.steps,
                         guidance=req.guidance, image_guidance=req.image_guidance,
                         negative_prompt=req.negative_prompt, camera=job.camera,
                         max_input_image_size=req.max_input_image_size, **options)

    settings = {**jobs_settings(req), "family": family.name,  # options as run.json reads them back (lists)
                **{k: list(v) if isinstance(v, tuple) else v for k, v in options.items()}}
    report = run_jobs(req.jobs, req.out, req.load_generator, render, settings, overwrite=req.overwrite,
                      progress=req.progress, log=lambda line: print(line, file=sys.stderr))
    print(f"jobs: {len(report['done'])} done, {len(report['skipped'])} already done, {len(report['failed'])} failed",
          file=sys.stderr)
    if report["failed"]:
        raise JobsFailed(len(report["failed"]), Path(req.out) / REPORT)
    return {"outputs": Path(req.out), "report": Path(req.out) / REPORT}


def jobs_settings(req: GenerateRequest) -> dict:
    """Everything of the command line the pixels of a jobs run depend on (recorded in OUT/run.json, compared on a
    rerun). Left out, as bench leaves them out: the device, and the speed and memory options (KV cache,
    --separate-cfg, offloading), which give the same image within rounding."""
    device = resolve_device(req.device)
    return {"model": str(Path(req.model).resolve()) if req.model and Path(req.model).exists() else req.model,
            "adapters": [[str(Path(path).resolve()), weight] for path, weight in as_adapter_list(req.adapters)],
            "steps": req.steps, "guidance": req.guidance, "image_guidance": req.image_guidance,
            "negative_prompt": req.negative_prompt, "seed": req.seed, "height": req.height, "width": req.width,
            "max_input_image_size": req.max_input_image_size,
            "dtype": str(resolve_dtype(req.dtype, device)).removeprefix("torch."),
            "camera_encoding": req.camera_encoding, "merge": req.merge, "quantize": req.quantize}


class JobsFailed(UserError):
    """Some lines failed (each already reported); the others were written. Exit code 1, not 2: the command ran."""

    exit_code = 1

    def __init__(self, count: int, report: Path):
        super().__init__(f"{count} job line{'s' if count > 1 else ''} failed (reasons above and in {report})")
