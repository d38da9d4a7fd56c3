"""Entry points. Thin: parse, validate, call. A UserError becomes one line on stderr and exit code 2.

Each command imports the room that runs it inside its function: those rooms load torch, diffusers and PEFT
(seconds), which `omnideft --help`, `check-shards` and argument errors should not wait for.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
from pathlib import Path

import yaml

from omnideft.adapters.registry import METHODS
from omnideft.data.format.check import check_command
from omnideft.demo import DEFAULTS as DEMO
from omnideft.demo import DEFAULTS_OMNIGEN2 as DEMO_OMNIGEN2
from omnideft.errors import UserError
from omnideft.files import is_disk_full, is_path_error
from omnideft.options import bounded
from omnideft.studio.access import DEFAULT_MAX_UPLOAD_MB, LOGIN_ENV
from omnideft.train.signals import EXIT_STOPPED

# Number options are checked when parsed, naming the option and the allowed range (omnideft/options.py).
COUNT, SIDE, SCALE = bounded(int, ">= 1"), bounded(int, ">= 16", multiple=16), bounded(float, ">= 0")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # `section.key=value` overrides may come before or after flags; argparse alone takes them only before.
    if extra and hasattr(args, "overrides") and all("=" in x and not x.startswith("-") for x in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.parse_args(argv)  # the usual "unrecognized arguments" message and exit 2
    args.argv = list(sys.argv[1:] if argv is None else argv)  # recorded in score tables
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args) or 0
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:
        # a write outside atomic_path (logs, a library's own files): still one line naming the file
        if is_disk_full(exc):
            print(f"error: cannot write {exc.filename or 'a file'}: {exc.strerror or exc}; free some space and run "
                  "again", file=sys.stderr)
            return 2
        if is_path_error(exc) and exc.filename:  # no permission, read-only, a file where a folder goes (or back)
            hint = " (a file stands where a folder is needed)" if exc.errno in (errno.ENOTDIR, errno.EEXIST) else ""
            print(f"error: cannot use {exc.filename}: {exc.strerror or exc}{hint}", file=sys.stderr)
            return 2
        raise
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
    t.add_argument("--overwrite", action="store_true",
                   help="start a fresh run in an output.dir that holds a finished or resumable run, deleting it "
                        "(without it such a run is refused)")
    t.set_defaults(func=_train)

    g = sub.add_parser("generate", help="generate an image, optionally from in-context examples",
                       description="One image (--prompt ... --out FILE.png), an orbit, or a batch (--jobs FILE.jsonl "
                                   "--out DIR): docs/generate.md; OmniGen2 bases: docs/omnigen2.md.")
    g.add_argument("--model", help="base: hub id, diffusers folder, OmniGen2 folder, 'tiny' or 'small' (default: the "
                   "adapter's base)")
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
    g.add_argument("--guidance", type=float, help="text CFG scale (default: OmniGen 2.5, OmniGen2 5.0)")
    g.add_argument("--image-guidance", type=float,
                   help="image CFG scale, with input images (default: OmniGen 1.6, OmniGen2 2.0)")
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
    g.add_argument("--family", default="auto", choices=["auto", "omnigen", "omnigen2"],
                   help="model family; auto = read from the base folder or the adapter (docs/omnigen2.md)")
    g.add_argument("--scheduler", default="euler", choices=["euler", "dpmsolver++"], help="OmniGen2 only: sampler")
    g.add_argument("--cfg-range", nargs=2, type=float, default=[0.0, 1.0], metavar=("START", "END"),
                   help="OmniGen2 only: guidance on the steps in this fraction of the schedule (default 0 1)")
    g.set_defaults(func=_generate)

    s = sub.add_parser("studio", help="local web app for in-context generation (needs omnideft[studio])",
                       description="A Gradio app on HOST:PORT: examples, query, prompt, adapters with weights, "
                                   "camera and orbit, task presets from shards, a history with command lines "
                                   "(docs/studio.md).")
    s.add_argument("--model", required=True, help="base: hub id, diffusers folder, 'tiny' or 'small'")
    s.add_argument("--adapters", nargs="*", default=[], metavar="DIR_OR_RUNS",
                   help="adapter folders, run folders or folders of runs; every adapter below them is offered")
    s.add_argument("--examples", nargs="*", default=[], metavar="SHARDS",
                   help="held-out shard globs or directories: task presets (examples, query, prompt, target)")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only; "
                                                        "another address is warned about, see --auth-file)")
    s.add_argument("--port", type=bounded(int, "[1, 65535]"), default=7860, help="port (default 7860)")
    s.add_argument("--auth-file", metavar="FILE", help="ask for a login: one user:password a line (keep it chmod "
                                                       f"600); or set {LOGIN_ENV}=user:password")
    s.add_argument("--max-upload-mb", type=bounded(int, ">= 1"), default=DEFAULT_MAX_UPLOAD_MB, metavar="MB",
                   help=f"largest file the page accepts, in MB (default {DEFAULT_MAX_UPLOAD_MB}); bigger uploads are "
                        "refused before they are stored")
    s.add_argument("--outputs", metavar="DIR", help="folder for the generated images and the page's uploads "
                                                    "(OUTPUTS/uploads); default: a new temporary folder")
    s.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    s.add_argument("--dtype", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    s.set_defaults(func=_studio)

    d = sub.add_parser("demo", help="offline end-to-end run: teach the shipped small OmniGen new tasks with DEFT",
                       description="Writes shards of tasks the pretrained `small` model never saw, trains a rank-8 "
                                   "DEFT adapter on them (CPU, about a minute), then scores base and base + DEFT on "
                                   "held-out queries of the new tasks and of the tasks the base knew: report.md, "
                                   "report.json, samples.png, retention.png, loss.png.")
    d.add_argument("--out", default="demo_out", help="output directory (default demo_out/)")
    d.add_argument("--steps", type=COUNT, help=f"training steps (default {DEMO['steps']}; "
                   f"--family omnigen2: {DEMO_OMNIGEN2['steps']})")
    d.add_argument("--samples", type=COUNT, help=f"training samples written as shards (default {DEMO['samples']}; "
                   f"--family omnigen2: {DEMO_OMNIGEN2['samples']})")
    d.add_argument("--family", default="omnigen", choices=["omnigen", "omnigen2"],
                   help="omnigen2: a small run on the tiny OmniGen2 instead (docs/omnigen2.md): trains a DEFT adapter "
                        "on an in-context task, writes loss.png, samples.png and report.json (the loss falls)")
    d.add_argument("--queries", type=COUNT, default=DEMO["queries"], help="held-out queries per new task")
    d.add_argument("--retention-queries", type=bounded(int, ">= 0"), default=DEMO["retention_queries"],
                   help="held-out queries per task the base knew")
    d.add_argument("--replay", type=bounded(float, "[0, 1)"), default=DEMO["replay"],
                   help="share of training samples drawn from the tasks the base knew (prior preservation, as "
                        f"DreamBooth does; default {DEMO['replay']}; 0 = the new tasks only)")
    d.add_argument("--method", default="deft", choices=sorted(METHODS),
                   help="adapter method (default deft; e.g. lora to compare the two on the same data)")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--no-progress", action="store_true", help="no progress bar")
    d.set_defaults(func=_demo)

    pt = sub.add_parser("pretrain", help="pretrain the small base OmniGen on the procedural shape tasks",
                        description="omnideft pretrain RECIPE [section.key=value ...] --out DIR: trains every weight "
                                    "of a small OmniGen from random (recipes/pretrain/small_base.yaml reproduces "
                                    "the shipped `small` model bit for bit on CPU), then scores it on held-out "
                                    "queries of its tasks (docs/models.md).")
    pt.add_argument("recipe", nargs="?", help="pretraining recipe YAML (recipes/pretrain/small_base.yaml)")
    pt.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. train.steps=100")
    pt.add_argument("--out", help="output folder (diffusers layout + pretrain.json + heldout.json)")
    pt.add_argument("--help-recipe", action="store_true", help="print every pretraining recipe key")
    pt.add_argument("--no-progress", action="store_true", help="no progress bar")
    pt.set_defaults(func=_pretrain)

    e = sub.add_parser("eval", help="score images (--pred/--ref folders) or held-out denoising loss (--model/--shards)",
                       description="Two modes. Folder scoring: omnideft eval --pred DIR --ref DIR --metrics "
                                   "clip_i,dino_v1,... --out DIR (pairs matched by file name; docs/eval.md). "
                                   "Denoising: omnideft eval --model M --shards S --out STEM: held-out rectified-"
                                   "flow loss per task for the base and each adapter.")
    e.add_argument("--model", help="denoising mode: base hub id, diffusers folder, 'tiny' or 'small'")
    e.add_argument("--adapter", action="append", default=[], help="denoising mode: adapter folder (repeatable)")
    e.add_argument("--shards", action="append", help="denoising mode: held-out shard glob or directory (repeatable)")
    e.add_argument("--out", required=True, help="folder mode: output folder (scores.csv, summary.json, summary.md); "
                                                "denoising mode: output stem (OUT.csv, OUT.json, OUT.md)")
    e.add_argument("--samples", type=COUNT, default=64,
                   help="denoising mode: samples evaluated (first N in shard order)")
    e.add_argument("--repeats", type=COUNT, default=2, help="denoising mode: noise draws per sample")
    e.add_argument("--max-image-size", type=SIDE, default=1024, help="denoising mode: longest image side")
    e.add_argument("--pred", metavar="DIR", help="folder mode: generated images")
    e.add_argument("--ref", metavar="DIR", help="folder mode: reference images, matched to --pred by file stem")
    e.add_argument("--cond", metavar="DIR", help="folder mode: condition images (edge/depth maps) for canny_f1 and "
                                                 "depth_rmse (default: derived from --ref)")
    e.add_argument("--prompts", metavar="FILE", help="folder mode: JSON object {image stem: prompt} for clip_t")
    e.add_argument("--metrics", help="folder mode: comma list, e.g. clip_i,dino_v1,ssim (see docs/eval.md)")
    _add_metric_flags(e)
    e.set_defaults(func=_eval)

    b = sub.add_parser("bench", help="benchmark protocol: generate with fixed seeds, score, tables; or --compare runs",
                       description="omnideft bench PROTOCOL --model M [--adapter A ...] --shards TEST_SHARDS --out DIR "
                                   "(protocols: visualcloze, subject, retention; resumable), or omnideft bench "
                                   "--compare DIR_A DIR_B ... --out DIR (paper-style table and bar chart).")
    b.add_argument("protocol", nargs="?", help="visualcloze | subject | retention")
    b.add_argument("--compare", nargs="+", metavar="DIR", help="compare finished runs (their summary.json)")
    b.add_argument("--model", help="base: hub id, diffusers folder, 'tiny' or 'small' (default: the adapter's base)")
    b.add_argument("--adapter", action="append", default=[], metavar="PATH[:WEIGHT]",
                   help="adapter folder, optionally weighted; repeatable: several are merged into the base")
    b.add_argument("--label", help="name of this run in comparisons (default: adapter folder name, or base)")
    b.add_argument("--shards", action="append", default=[], help="test shard glob or directory (repeatable)")
    b.add_argument("--prompts", metavar="FILE", help="retention: prompt list, one per line (default: built in)")
    b.add_argument("--metrics", help="subject / retention: comma list replacing the protocol's metrics")
    b.add_argument("--images-per-prompt", type=COUNT, default=1, help="subject / retention: seeds per prompt")
    b.add_argument("--limit", type=COUNT, help="only the first N jobs (a quick look; resumes into the full run)")
    b.add_argument("--out", required=True, help="output folder")
    b.add_argument("--seed", type=int, default=0, help="job i is generated with seed SEED + i")
    b.add_argument("--steps", type=COUNT, default=50)
    b.add_argument("--guidance", type=SCALE, default=2.5, help="text CFG scale")
    b.add_argument("--image-guidance", type=SCALE, default=1.6, help="image CFG scale (with input images)")
    b.add_argument("--height", type=SIDE, default=1024, help="text-only jobs: output height (in-context jobs use "
                                                            "their target's size)")
    b.add_argument("--width", type=SIDE, default=1024, help="text-only jobs: output width")
    b.add_argument("--max-input-image-size", type=SIDE, default=1024)
    b.add_argument("--dtype", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    _add_metric_flags(b)
    b.set_defaults(func=_bench)

    x = sub.add_parser("export", help="export an adapter as a plain LoRA (PEFT/diffusers/ComfyUI/kohya) or merged",
                       description="Every adapted layer exports its method's exact change: LoRA factors (e.g. DEFT, "
                                   "PaRa, LoRA) as they are; a dense delta (e.g. SODA) merged or as its best rank-r "
                                   "LoRA (the error is reported).")
    x.add_argument("adapter", help="adapter folder")
    x.add_argument("--format", required=True, help="peft-lora | diffusers | comfyui | kohya | merged")
    x.add_argument("--base", help="base model: hub id, diffusers folder, OmniGen2 folder, 'tiny' or 'small' (default: "
                   "the adapter's base; the family is the adapter's)")
    x.add_argument("--out", required=True, help="output folder (merged: a diffusers pipeline folder)")
    x.add_argument("--rank", type=COUNT, help="rank for dense deltas (e.g. SODA; default: adapter rank)")
    x.set_defaults(func=_export)

    c = sub.add_parser("check-shards", help="verify a shard directory (counts, schema, images, checksums)")
    c.add_argument("dir", help="an output directory (<out>) or one split directory (<out>/<split>)")
    c.set_defaults(func=_check_shards)

    pl = sub.add_parser("plan", help="predicted peak GPU memory of a recipe by component, and the preset that fits",
                        description="omnideft plan RECIPE [section.key=value ...] [--gpu-memory 24GB] [--gpus N]. "
                                    "Reads only the model's config (the real OmniGen's ships with omnideft): no "
                                    "weights, no GPU (docs/memory.md).")
    pl.add_argument("recipe", nargs="?", help="recipe YAML")
    pl.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. train.memory=24gb")
    pl.add_argument("--gpu-memory", metavar="SIZE", help="GPU size, e.g. 24GB: which presets fit, the cheapest one; "
                    "exit 2 when the recipe's train.memory preset does not fit")
    pl.add_argument("--gpus", type=COUNT, default=1, help="GPUs (ZeRO partitioning of the presets that use it)")
    pl.add_argument("--input-images", type=bounded(int, ">= 0"),
                    help="input images per sample (default: the most among the first samples of the recipe's local "
                         "shards, else 2)")
    pl.add_argument("--text-tokens", type=COUNT, default=128, help="text tokens per sample (default 128)")
    pl.set_defaults(func=_plan)

    cl = sub.add_parser("cache-latents", help="encode every image of shards once into a latent cache (data.latents)",
                        description="omnideft cache-latents SHARDS... --model M --out DIR: each image's VAE posterior "
                                    "(mean, std) as safetensors, keyed by the image bytes' sha256, for this VAE and "
                                    "image size; training with data.latents=DIR then gives the same losses without "
                                    "encoding (docs/memory.md).")
    cl.add_argument("shards", nargs="+", help="shard globs or directories (as in data.shards)")
    cl.add_argument("--model", required=True, help="base whose VAE encodes: hub id, diffusers folder, 'tiny', 'small'")
    cl.add_argument("--out", required=True, help="new or empty folder, or a cache of this VAE and size (extended)")
    cl.add_argument("--max-image-size", type=SIDE, default=1024, help="the recipe's data.max_image_size (default 1024)")
    cl.add_argument("--seed", type=int, default=0, help="the recipe's model.seed (only for --model tiny)")
    cl.add_argument("--no-progress", action="store_true", help="no progress bar")
    cl.set_defaults(func=_cache_latents)

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
        from omnideft.locks import check_unlocked

        check_unlocked(recipe.output.dir, "output.dir")  # before starting processes that would all wait on it
        return _relaunch(recipe.launch.config, args)
    from omnideft.generate.validation import ValidationRenderer
    from omnideft.train.faults import Faults
    from omnideft.train.launch import report_stop
    from omnideft.train.loop import train
    from omnideft.train.signals import TrainingStopped

    validate = ValidationRenderer(recipe.validation, recipe.data.max_image_size)
    faults = Faults.parse(os.environ.get("OMNIDEFT_FAULT", ""))  # test hooks; the kill/resume tests set it
    try:
        adapter = train(recipe, progress=not args.no_progress, validate=validate if validate.items else None,
                        resume=args.resume, faults=faults, overwrite=args.overwrite)
    except TrainingStopped as exc:
        if not report_stop(exc):  # under omnideft's own launcher, the launcher prints one line for every rank
            print(f"omnideft: {exc}", file=sys.stderr)
        return EXIT_STOPPED
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"adapter: {adapter}")
    return 0


def _plan(args) -> int:
    from omnideft.plan.report import run_plan
    from omnideft.train.recipe import load_recipe

    overrides, recipe_path = list(args.overrides), args.recipe
    if recipe_path and "=" in recipe_path and not os.path.exists(recipe_path):  # only overrides, no file
        overrides.insert(0, recipe_path)
        recipe_path = None
    return run_plan(load_recipe(recipe_path, overrides), args.gpu_memory, args.gpus, args.input_images,
                    args.text_tokens)


def _cache_latents(args) -> int:
    from omnideft.train.cache_latents import cache_latents

    meta = cache_latents(args.shards, args.model, args.out, args.max_image_size, seed=args.seed,
                         progress=not args.no_progress)
    print(f"latents: {args.out} ({meta['entries']} images; {meta['written']} encoded now)")
    return 0


def _under_launcher() -> bool:
    return any(k in os.environ for k in ("OMNIDEFT_LAUNCHED", "LOCAL_RANK", "ACCELERATE_PROCESS_ID"))


def _relaunch(config: str, args) -> int:
    """Re-run this same `omnideft train` under `accelerate launch --config_file CONFIG` (train/launch.py)."""
    _check_launch_config(config)
    argv = ["train", *([args.recipe] if args.recipe else []), *args.overrides]
    if args.no_progress:
        argv.append("--no-progress")
    if args.resume:
        argv += ["--resume", args.resume]
    if args.overwrite:
        argv.append("--overwrite")
    from omnideft.train.launch import relaunch

    return relaunch(config, argv)


def _check_launch_config(config: str) -> None:
    """Catch the launch files that would otherwise hang a rendezvous or fail inside every rank."""
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
                          orbit=args.orbit, frames=args.frames, fps=args.fps, camera_encoding=args.camera_encoding,
                          merge=not args.no_merge, kv_cache=not args.no_kv_cache, separate_cfg=args.separate_cfg,
                          offload=args.offload, offload_kv_cache=args.offload_kv_cache, quantize=args.quantize,
                          jobs=args.jobs, overwrite=args.overwrite, progress=not args.no_progress, family=args.family,
                          scheduler=args.scheduler, cfg_range=tuple(args.cfg_range))
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
          port=args.port, outputs=args.outputs, device=args.device, dtype=args.dtype, auth_file=args.auth_file,
          max_upload_mb=args.max_upload_mb)
    return 0


def _export(args) -> int:
    from omnideft.adapters.folder import resolve_model_name
    from omnideft.export.run import run_export

    report = run_export(args.adapter, args.format, resolve_model_name(args.base, args.adapter), args.out,
                        rank=args.rank)
    print(report)
    return 0


def _demo(args) -> int:
    from omnideft.demo.run import run_demo

    if args.family == "omnigen2":  # OmniGen2 backend (demo/omnigen2.py)
        return _demo_omnigen2(args)
    args.steps = DEMO["steps"] if args.steps is None else args.steps
    args.samples = DEMO["samples"] if args.samples is None else args.samples
    if not 0.0 <= args.replay < 1.0:
        raise UserError(f"--replay {args.replay}: give a share in [0, 1)")

    r = run_demo(args.out, steps=args.steps, samples=args.samples, queries=args.queries,
                 retention_queries=args.retention_queries, seed=args.seed, method=args.method, replay=args.replay,
                 progress=not args.no_progress)
    print(f"demo: {args.out}/ — new tasks: IoU {r['iou']['base']:.3f} -> {r['iou']['adapted']:.3f}, colour error "
          f"{r['colour_error']['base']:.1f} -> {r['colour_error']['adapted']:.1f}; known tasks: IoU "
          f"{r['retention']['iou']['base']:.3f} -> {r['retention']['iou']['adapted']:.3f}; {r['total_seconds']:.0f} s")
    return 0


def _demo_omnigen2(args) -> int:
    from omnideft.demo.omnigen2 import run_omnigen2_demo

    r = run_omnigen2_demo(args.out, steps=DEMO_OMNIGEN2["steps"] if args.steps is None else args.steps,
                          samples=DEMO_OMNIGEN2["samples"] if args.samples is None else args.samples,
                          seed=args.seed, progress=not args.no_progress)
    print(f"demo (tiny OmniGen2): {args.out}/ — training loss {r['train_loss']['first_steps']:.3f} -> "
          f"{r['train_loss']['last_steps']:.3f}; fixed-noise loss on the training samples "
          f"{r['fixed_noise_loss']['base']:.3f} (base) -> {r['fixed_noise_loss']['adapted']:.3f} (base + DEFT); "
          f"{r['total_seconds']:.0f} s")
    return 0


def _pretrain(args) -> int:
    from omnideft.options import options_help
    from omnideft.pretrain.recipe import PretrainRecipe, load_pretrain_recipe

    if args.help_recipe:
        print(options_help(PretrainRecipe))
        return 0
    if not args.recipe or not args.out:
        raise UserError("pretrain needs a recipe YAML and --out DIR (or --help-recipe)")
    recipe = load_pretrain_recipe(args.recipe, args.overrides)
    from omnideft.pretrain.heldout import write_heldout_scores
    from omnideft.pretrain.loop import pretrain

    folder = pretrain(recipe, args.out, progress=not args.no_progress)
    print(f"model: {folder}")
    if recipe.heldout.queries:
        h = recipe.heldout
        table = write_heldout_scores(folder, recipe.data.tasks, h.queries, h.seed, recipe.data.image_size,
                                     h.sampler_steps, h.guidance, h.image_guidance, progress=not args.no_progress)
        print(f"held-out ({recipe.heldout.queries} per task): mean IoU {table['mean']['iou']:.3f}, "
              f"mean colour error {table['mean']['colour_error']:.1f}")
    return 0


def _eval(args) -> int:
    if args.pred:
        from omnideft.eval.folders import run_folder_eval
        from omnideft.eval.metrics import parse_metrics

        if not args.metrics:
            raise UserError("--metrics is required with --pred (e.g. --metrics clip_i,dino_v1,ssim)")
        paths = run_folder_eval(args.pred, args.ref, parse_metrics(args.metrics), args.out, _metric_options(args),
                                cond=args.cond, prompts=args.prompts, argv=args.argv, progress=not args.no_progress)
        print(Path(paths[-1]).read_text(), end="")
        return 0
    from omnideft.eval.run import run_eval

    if not args.model or not args.shards:
        raise UserError("eval needs --pred DIR (folder scoring) or --model and --shards (denoising loss)")
    results, paths = run_eval(args.model, args.adapter, args.shards, args.out, samples=args.samples,
                              max_image_size=args.max_image_size, repeats=args.repeats)
    print(Path(paths[-1]).read_text(), end="")
    return 0


def _add_metric_flags(p: argparse.ArgumentParser) -> None:
    """Models and settings of the metrics (omnideft/eval/metrics): hub ids or local folders / files."""
    p.add_argument("--clip-model", default="openai/clip-vit-base-patch32", help="clip_i / clip_t model")
    p.add_argument("--dino-model", default="facebook/dino-vits8", help="dino_v1 model (transformers ViT)")
    p.add_argument("--dinov2-model", default="facebook/dinov2-small", help="dino_v2 model")
    p.add_argument("--depth-model", default="depth-anything/Depth-Anything-V2-Small-hf", help="depth_rmse model")
    p.add_argument("--aesthetic-model", metavar="FILE", help="aesthetic: LAION aesthetic MLP (.safetensors)")
    p.add_argument("--aesthetic-clip-model", default="openai/clip-vit-large-patch14", help="aesthetic: CLIP L/14")
    p.add_argument("--fid-weights", metavar="FILE", help="fid: FID Inception-v3 weights (.safetensors)")
    p.add_argument("--fid-features", default="inception", choices=["inception", "dinov2"],
                   help="fid feature network (dinov2: Fréchet distance of --dinov2-model features)")
    p.add_argument("--canny-thresholds", default="100,200", metavar="LOW,HIGH", help="canny_f1 Canny thresholds")
    p.add_argument("--batch-size", type=COUNT, default=16, help="images per metric forward")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _metric_options(args):
    import torch

    from omnideft.eval.metrics import MetricOptions

    try:
        low, high = (int(x) for x in args.canny_thresholds.split(","))
    except ValueError:
        raise UserError(f"--canny-thresholds {args.canny_thresholds!r}: expected two integers LOW,HIGH") from None
    if args.batch_size < 1:
        raise UserError(f"--batch-size {args.batch_size} must be >= 1")
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    return MetricOptions(device=device, batch_size=args.batch_size, clip_model=args.clip_model,
                         dino_model=args.dino_model, dinov2_model=args.dinov2_model, depth_model=args.depth_model,
                         aesthetic_model=args.aesthetic_model, aesthetic_clip_model=args.aesthetic_clip_model,
                         fid_weights=args.fid_weights, fid_features=args.fid_features, canny_thresholds=(low, high))


def _bench(args) -> int:
    if args.compare:
        from omnideft.bench.compare import run_compare

        if args.protocol:
            raise UserError("give either a PROTOCOL to run or --compare DIR ..., not both")
        paths = run_compare(args.compare, args.out)
        print(Path(paths[0]).read_text(), end="")
        print(f"chart: {paths[-1]}")
        return 0
    if not args.protocol:
        raise UserError("bench needs a PROTOCOL (visualcloze, subject, retention) or --compare DIR ...")
    from omnideft.bench.protocols import protocol_class

    protocol_class(args.protocol)  # an unknown protocol fails before torch and the models load
    from omnideft.bench.generator import GenerationSettings
    from omnideft.bench.protocol import ProtocolInputs
    from omnideft.bench.run import BenchRequest, run_bench
    from omnideft.eval.metrics import parse_metrics

    if args.images_per_prompt < 1:
        raise UserError(f"--images-per-prompt {args.images_per_prompt} must be >= 1")
    options = _metric_options(args)
    generation = GenerationSettings(model=args.model, adapters=args.adapter, steps=args.steps,
                                    guidance=args.guidance, image_guidance=args.image_guidance, height=args.height,
                                    width=args.width, max_input_image_size=args.max_input_image_size,
                                    device=args.device, dtype=args.dtype)
    inputs = ProtocolInputs(shards=args.shards, prompts=args.prompts,
                            metrics=parse_metrics(args.metrics) if args.metrics else None,
                            images_per_prompt=args.images_per_prompt)
    req = BenchRequest(protocol=args.protocol, out=args.out, generation=generation, inputs=inputs, options=options,
                       seed=args.seed, limit=args.limit, label=args.label, progress=not args.no_progress)
    paths = run_bench(req, argv=args.argv)
    print(Path(paths[-1]).read_text(), end="")
    return 0


def _check_shards(args) -> int:
    return check_command(Path(args.dir))


def _convert(args) -> int:
    from omnideft.model.convert import convert_original_checkpoint

    print(f"converted: {convert_original_checkpoint(args.src, args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
