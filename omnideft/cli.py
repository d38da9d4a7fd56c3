"""Entry points. Thin: parse, validate, call. A UserError becomes one line on stderr and exit code 2."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from omnideft.errors import UserError

EXIT_STOPPED = 75  # EX_TEMPFAIL: stopped by a signal after writing a checkpoint; resume with --resume latest


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args) or 0
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="omnideft", description="DEFT adapters for OmniGen: train, generate, demo.")
    sub = p.add_subparsers(metavar="COMMAND")

    t = sub.add_parser("train", help="train an adapter from a recipe YAML",
                       description="omnideft train RECIPE [section.key=value ...]. "
                                   "Run under `accelerate launch -m omnideft train ...` for several processes.")
    t.add_argument("recipe", nargs="?", help="recipe YAML (see recipes/ and docs/recipes.md)")
    t.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. train.lr=1e-4")
    t.add_argument("--help-recipe", action="store_true", help="print every recipe key with default and help")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.add_argument("--resume", metavar="latest|PATH",
                   help="continue from the newest complete checkpoint in output.dir (latest) or from a checkpoint "
                        "folder: step, optimizer, scheduler, RNG and data position are restored")
    t.set_defaults(func=_train)

    g = sub.add_parser("generate", help="generate an image, optionally from in-context examples")
    g.add_argument("--model", help="base: hub id, diffusers folder or 'tiny' (default: the adapter's base)")
    g.add_argument("--adapter", action="append", default=[], metavar="PATH[:WEIGHT]",
                   help="adapter folder (omnideft or PEFT), optionally with a weight; repeatable: several adapters "
                        "are merged into the base as W + sum of weight x delta (exact, no inference overhead)")
    g.add_argument("--prompt", required=True, help="instruction; may reference --image k as <img><|image_k|></img>")
    g.add_argument("--image", action="append", default=[], help="query input image (repeatable, in order)")
    g.add_argument("--example", action="append", default=[], metavar="IN=OUT",
                   help="in-context example pair: input image = output image (repeatable)")
    g.add_argument("--out", required=True, help="output PNG")
    g.add_argument("--sheet", help="contact sheet path (default: OUT_sheet.png)")
    g.add_argument("--steps", type=int, default=50)
    g.add_argument("--guidance", type=float, default=2.5, help="text CFG scale")
    g.add_argument("--image-guidance", type=float, default=1.6, help="image CFG scale (with input images)")
    g.add_argument("--negative-prompt", help="negative prompt of the CFG (default: OmniGen's list of defects)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--height", type=int, help="output height (default: first query image, else 1024)")
    g.add_argument("--width", type=int, help="output width (default: first query image, else 1024)")
    g.add_argument("--max-input-image-size", type=int, default=1024)
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
    g.set_defaults(func=_generate)

    s = sub.add_parser("studio", help="local web app for in-context generation (needs omnideft[studio])",
                       description="A Gradio app on HOST:PORT: examples, query, prompt, adapters with weights, "
                                   "camera and orbit, task presets from shards, a history with command lines "
                                   "(docs/studio.md).")
    s.add_argument("--model", required=True, help="base: hub id, diffusers folder or 'tiny'")
    s.add_argument("--adapters", nargs="*", default=[], metavar="DIR_OR_RUNS",
                   help="adapter folders, run folders or folders of runs; every adapter below them is offered")
    s.add_argument("--examples", nargs="*", default=[], metavar="SHARDS",
                   help="held-out shard globs or directories: task presets (examples, query, prompt, target)")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    s.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    s.add_argument("--outputs", metavar="DIR", help="folder for the generated images (default: a new temporary folder)")
    s.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    s.add_argument("--dtype", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    s.set_defaults(func=_studio)

    d = sub.add_parser("demo", help="offline end-to-end run on a tiny OmniGen (CPU, a few minutes)")
    d.add_argument("--out", default="demo_out", help="output directory (default demo_out/)")
    d.add_argument("--steps", type=int, default=400, help="training steps")
    d.add_argument("--samples", type=int, default=96, help="synthetic training samples")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--vae-steps", type=int, default=300, help="steps fitting the tiny VAE to the images (0 = random)")
    d.add_argument("--no-progress", action="store_true", help="no progress bar")
    d.set_defaults(func=_demo)

    e = sub.add_parser("eval", help="held-out denoising loss per task: base vs adapters (CSV/JSON/Markdown)")
    e.add_argument("--model", required=True, help="base: hub id, diffusers folder or 'tiny'")
    e.add_argument("--adapter", action="append", default=[], help="adapter folder (repeatable)")
    e.add_argument("--shards", action="append", required=True, help="held-out shard glob or directory (repeatable)")
    e.add_argument("--out", required=True, help="output stem: writes OUT.csv, OUT.json, OUT.md")
    e.add_argument("--samples", type=int, default=64, help="samples evaluated (first N in shard order)")
    e.add_argument("--repeats", type=int, default=2, help="noise draws per sample")
    e.add_argument("--max-image-size", type=int, default=1024)
    e.set_defaults(func=_eval)

    x = sub.add_parser("export", help="export an adapter as a plain LoRA (PEFT/diffusers/ComfyUI/kohya) or merged",
                       description="DEFT/PaRa/LoRA become an exact rank-r LoRA for their base weights; SODA/SVDiff "
                                   "are exported merged or as their best rank-r LoRA (the error is reported).")
    x.add_argument("adapter", help="adapter folder")
    x.add_argument("--format", required=True, help="peft-lora | diffusers | comfyui | kohya | merged")
    x.add_argument("--base", help="base model: hub id, diffusers folder or 'tiny' (default: the adapter's base)")
    x.add_argument("--out", required=True, help="output folder (merged: a diffusers pipeline folder)")
    x.add_argument("--rank", type=int, help="rank for full-rank adapters (SODA/SVDiff; default: adapter rank)")
    x.set_defaults(func=_export)

    c = sub.add_parser("check-shards", help="verify a shard directory (counts, schema, images, checksums)")
    c.add_argument("dir")
    c.add_argument("rest", nargs=argparse.REMAINDER)
    c.set_defaults(func=_check_shards)

    v = sub.add_parser("convert-original", help="convert an original-format OmniGen checkpoint to diffusers layout")
    v.add_argument("src")
    v.add_argument("out")
    v.set_defaults(func=_convert)
    return p


def _train(args) -> int:
    from omnideft.train.recipe import load_recipe, recipe_help

    if args.help_recipe:
        print(recipe_help())
        return 0
    if not args.recipe:
        raise UserError("train needs a recipe YAML (or --help-recipe)")
    overrides = list(args.overrides)
    recipe_path = args.recipe
    if "=" in recipe_path and not os.path.exists(recipe_path):  # only overrides, no file
        overrides.insert(0, recipe_path)
        recipe_path = None
    recipe = load_recipe(recipe_path, overrides)
    if recipe.launch.config and not _under_launcher():
        return _relaunch(recipe.launch.config, args)
    from omnideft.generate.validation import ValidationRenderer
    from omnideft.train.loop import train
    from omnideft.train.signals import TrainingStopped

    validate = ValidationRenderer(recipe.validation, recipe.data.max_image_size)
    try:
        adapter = train(recipe, progress=not args.no_progress, validate=validate if validate.items else None,
                        resume=args.resume)
    except TrainingStopped as exc:
        print(f"omnideft: {exc}", file=sys.stderr)
        return EXIT_STOPPED
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"adapter: {adapter}")
    return 0


def _under_launcher() -> bool:
    return any(k in os.environ for k in ("OMNIDEFT_LAUNCHED", "LOCAL_RANK", "ACCELERATE_PROCESS_ID"))


def _relaunch(config: str, args) -> int:
    """Re-run this same `omnideft train` under `accelerate launch --config_file CONFIG`."""
    import subprocess

    _check_launch_config(config)
    argv = ["train", *([args.recipe] if args.recipe else []), *args.overrides]
    if args.no_progress:
        argv.append("--no-progress")
    if args.resume:
        argv += ["--resume", args.resume]
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", config, "-m", "omnideft", *argv]
    print(f"launching: accelerate launch --config_file {config} -m omnideft {' '.join(argv)}", file=sys.stderr)
    return subprocess.call(cmd, env={**os.environ, "OMNIDEFT_LAUNCHED": "1"})


def _check_launch_config(config: str) -> None:
    """Catch the launch files that would otherwise hang a rendezvous or fail inside every rank."""
    import yaml

    if not os.path.isfile(config):
        raise UserError(f"launch.config {config} not found")
    try:
        cfg = yaml.safe_load(open(config)) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"launch.config {config} is not valid YAML: {str(exc).splitlines()[0]}") from None
    procs, machines = cfg.get("num_processes", 1), cfg.get("num_machines", 1)
    if not (isinstance(procs, int) and isinstance(machines, int) and procs >= 1 and machines >= 1):
        raise UserError(f"launch.config {config}: num_processes and num_machines must be positive integers")
    if procs % machines:
        raise UserError(f"launch.config {config}: num_processes {procs} (all nodes) is not a multiple of "
                        f"num_machines {machines}")
    if procs > 1 and str(cfg.get("distributed_type", "NO")).upper() == "NO":
        raise UserError(f"launch.config {config}: num_processes {procs} needs a distributed_type "
                        "(MULTI_GPU or DEEPSPEED), not NO")
    ds_file = (cfg.get("deepspeed_config") or {}).get("deepspeed_config_file")
    if ds_file and not os.path.isfile(ds_file):
        raise UserError(f"launch.config {config}: deepspeed_config_file {ds_file} not found")


def _generate(args) -> int:
    from omnideft.generate.run import GenerateRequest, run_generate

    examples = []
    for item in args.example:
        if "=" not in item:
            raise UserError(f"--example {item!r} must be IN=OUT (two image paths)")
        a, b = item.split("=", 1)
        examples.append((a, b))
    req = GenerateRequest(prompt=args.prompt, out=args.out, model=args.model, adapters=args.adapter,
                          images=args.image, examples=examples, steps=args.steps, guidance=args.guidance,
                          image_guidance=args.image_guidance, negative_prompt=args.negative_prompt, seed=args.seed,
                          height=args.height, width=args.width,
                          max_input_image_size=args.max_input_image_size, device=args.device, dtype=args.dtype,
                          sheet=args.sheet, camera=args.camera, camera_from=args.camera_from, view=args.view,
                          orbit=args.orbit, frames=args.frames, fps=args.fps, camera_encoding=args.camera_encoding)
    for kind, path in run_generate(req).items():
        print(f"{kind}: {path}")
    return 0


def _studio(args) -> int:
    try:
        import gradio  # noqa: F401  (an optional extra)
    except ImportError:
        raise UserError("omnideft studio needs gradio: pip install 'omnideft[studio]'") from None
    from omnideft.studio.app import serve

    serve(model=args.model, adapter_roots=args.adapters, example_shards=args.examples, host=args.host,
          port=args.port, outputs=args.outputs, device=args.device, dtype=args.dtype)
    return 0


def _export(args) -> int:
    from omnideft.adapters.export import run_export
    from omnideft.generate.generator import resolve_model_name

    report = run_export(args.adapter, args.format, resolve_model_name(args.base, args.adapter), args.out,
                        rank=args.rank)
    print(report)
    return 0


def _demo(args) -> int:
    from omnideft.demo.run import run_demo

    r = run_demo(args.out, steps=args.steps, samples=args.samples, seed=args.seed, vae_steps=args.vae_steps,
                 progress=not args.no_progress)
    print(f"demo: {args.out}/ — loss {r['loss_start']:.4f} -> {r['loss_end']:.4f} ({r['loss_drop_pct']:.1f} % lower), "
          f"held-out {r['heldout_loss_base']:.4f} -> {r['heldout_loss_adapted']:.4f}, {r['total_seconds']:.0f} s")
    return 0


def _eval(args) -> int:
    from omnideft.eval.run import run_eval

    results, paths = run_eval(args.model, args.adapter, args.shards, args.out, samples=args.samples,
                              max_image_size=args.max_image_size, repeats=args.repeats)
    print(Path(paths[-1]).read_text(), end="")
    return 0


def _check_shards(args) -> int:
    from data_builders.check import main as check_main

    return check_main([args.dir, *args.rest])


def _convert(args) -> int:
    from omnideft.model.convert import convert_original_checkpoint

    print(f"converted: {convert_original_checkpoint(args.src, args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
