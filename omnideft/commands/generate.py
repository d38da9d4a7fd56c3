"""omnideft generate: one image, an orbit, or a batch of jobs (docs/generate.md)."""

from __future__ import annotations

from omnideft.commands.args import add_family_flag
from omnideft.commands.family_options import (
    add_family_options,
    check_family_settings,
    family_settings,
    model_choices,
)
from omnideft.errors import UserError


def add_parser(sub):
    g = sub.add_parser("generate", help="generate an image, optionally from in-context examples",
                       description="One image (--prompt ... --out FILE.png), an orbit, or a batch (--jobs FILE.jsonl "
                                   "--out DIR): docs/generate.md; the model families: docs/models.md.")
    g.add_argument("--model", help=f"base: {model_choices()} (default: the adapter's base)")
    g.add_argument("--adapter", action="append", default=[], metavar="PATH[:WEIGHT]",
                   help="adapter folder (omnideft or PEFT), optionally with a weight; repeatable: several adapters "
                        "are merged into the base as W + sum of weight x delta (exact, no inference overhead)")
    g.add_argument("--no-merge", action="store_true",
                   help="keep one adapter (weight 1) as separate layers instead of merging it into the base: quicker "
                        "to swap (studio), a little slower per step")
    g.add_argument("--prompt", help="instruction; may reference --image k as <img><|image_k|></img> "
                                    "(required without --jobs)")
    g.add_argument("--image", action="append", default=[], help="query input image (repeatable, in order)")
    g.add_argument("--example", action="append", default=[], metavar="IN=OUT",
                   help="in-context example pair: input image = output image (repeatable)")
    g.add_argument("--out", required=True, help="output PNG (with --jobs: the output folder)")
    g.add_argument("--jobs", metavar="FILE.jsonl",
                   help="batch: one JSON object a line {prompt, images, examples, seed, height, width, camera, n}; "
                        "the model loads once; line L writes LLLL.png (LLLL_k.png for n > 1) and LLLL_sheet.png in "
                        "--out DIR; lines already done are skipped, a bad line is reported and the rest run")
    g.add_argument("--overwrite", action="store_true",
                   help="with --jobs: into an --out DIR made with other settings (DIR/run.json), delete its images "
                        "and render every line again (without it such a folder is refused)")
    g.add_argument("--sheet", help="contact sheet path (default: OUT_sheet.png)")
    g.add_argument("--steps", type=int, default=50)
    g.add_argument("--guidance", type=float, help="text CFG scale (default: the model family's own)")
    g.add_argument("--image-guidance", type=float,
                   help="image CFG scale, with input images (default: the model family's own)")
    g.add_argument("--negative-prompt", help="negative prompt of the CFG (default: OmniGen's list of defects)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--height", type=int, help="output height, a multiple of 16 (default: first query image, else 1024 "
                                              "or the model's largest side)")
    g.add_argument("--width", type=int, help="output width, a multiple of 16 (default: first query image, else 1024 "
                                             "or the model's largest side)")
    g.add_argument("--max-input-image-size", type=int, default=1024,
                   help="longest input image side; inputs are resized to it (and to the model's largest side)")
    g.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    g.add_argument("--dtype", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    g.add_argument("--camera", metavar="NUMBERS", help="target camera: 'f,cx,cy,k,qw,qx,qy,qz,tx,ty,tz' (11 "
                   "numbers of docs/camera.md) or named fields 'f=..,cx=..,...' (k may be omitted)")
    g.add_argument("--camera-from", metavar="SPARSE_DIR", help="COLMAP sparse model to take cameras from "
                   "(with --view or --orbit)")
    g.add_argument("--view", metavar="IMAGE_NAME", help="target camera = this registered image of --camera-from")
    g.add_argument("--orbit", nargs=2, metavar=("VIEW_A", "VIEW_B"), help="render --frames cameras from VIEW_A to "
                   "VIEW_B of --camera-from (slerp rotation, lerp the rest): OUT.gif, OUT_strip.png, OUT_frames/, "
                   "OUT.mp4 when imageio-ffmpeg is installed; without --camera-from, two --camera strings")
    g.add_argument("--frames", type=int, default=24, help="orbit frames, both ends included (default 24)")
    g.add_argument("--fps", type=float, default=8.0, help="orbit GIF/MP4 frame rate (default 8)")
    g.add_argument("--camera-encoding", default="auto", choices=["auto", "learned", "text"],
                   help="how the camera enters the prompt; auto = the adapter's camera.json, else text")
    g.add_argument("--no-kv-cache", action="store_true",
                   help="recompute the condition (prompt, examples, images) at every step, as diffusers does; the "
                        "default caches its keys/values after the first step (exact, several times faster)")
    g.add_argument("--separate-cfg", action="store_true",
                   help="run the guidance rows (prompt, negative, images only) one by one instead of in one batch: "
                        "less activation memory, slower")
    g.add_argument("--offload", action="store_true",
                   help="CUDA only: keep the transformer's blocks in CPU memory and move each to the GPU when it "
                        "runs (least GPU memory, slower; docs/generate.md)")
    g.add_argument("--offload-kv-cache", action="store_true",
                   help="CUDA only: keep the condition KV cache in pinned CPU memory, fetching one layer ahead")
    g.add_argument("--quantize", choices=["bf16", "int8", "fp8", "nf4"],
                   help="store the base this way after the adapters are merged, as the trainer's model.quantize "
                        "(int8/fp8: optimum-quanto, CPU or GPU; nf4: bitsandbytes, CUDA only; docs/memory.md)")
    g.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_family_flag(g)
    add_family_options(g)
    return g


def run(args) -> int:
    from omnideft.generate.run import GenerateRequest, run_generate

    examples = []
    for item in args.example:
        if "=" not in item:
            raise UserError(f"--example {item!r} must be IN=OUT (two image paths)")
        a, b = item.split("=", 1)
        examples.append((a, b))
    settings = family_settings(args)
    check_family_flags(args, settings)
    req = GenerateRequest(prompt=args.prompt, out=args.out, model=args.model, adapters=args.adapter,
                          images=args.image, examples=examples, steps=args.steps, guidance=args.guidance,
                          image_guidance=args.image_guidance, negative_prompt=args.negative_prompt, seed=args.seed,
                          height=args.height, width=args.width,
                          max_input_image_size=args.max_input_image_size, device=args.device, dtype=args.dtype,
                          sheet=args.sheet, camera=args.camera, camera_from=args.camera_from, view=args.view,
                          orbit=args.orbit, frames=args.frames, fps=args.fps, camera_encoding=args.camera_encoding,
                          merge=not args.no_merge, kv_cache=not args.no_kv_cache, separate_cfg=args.separate_cfg,
                          offload=args.offload, offload_kv_cache=args.offload_kv_cache, quantize=args.quantize,
                          jobs=args.jobs, overwrite=args.overwrite, progress=not args.no_progress, family=args.family,
                          options=settings)
    for kind, path in run_generate(req).items():
        print(f"{kind}: {path}")
    return 0


def check_family_flags(args, settings: dict) -> None:
    """Before any model loads: the family flags given (`settings`) must be the model's family's. The family is the
    base's (--model, else the first adapter's base), a preset taking the family the adapter was trained on."""
    if not settings:  # nothing to check: the model's family is left for the generator to resolve
        return
    from omnideft.adapters.compose import parse_adapter_arg
    from omnideft.adapters.folder import adapter_family, resolve_model_name
    from omnideft.families.registry import resolve_family

    first = parse_adapter_arg(args.adapter[0])[0] if args.adapter else None
    model = resolve_model_name(args.model, first)
    check_family_settings(settings, resolve_family(model, args.family, adapter_family(first) if first else None), model)
