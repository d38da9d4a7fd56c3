"""omnideft train RECIPE [section.key=value ...]: an adapter from a recipe, here or relaunched under `accelerate
launch` when the recipe names a launch.config."""

from __future__ import annotations

import os
import sys

import yaml

from omnideft.commands.args import recipe_and_overrides
from omnideft.errors import UserError
from omnideft.train.signals import EXIT_STOPPED


def add_parser(sub):
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
    return t


def run(args) -> int:
    from omnideft.train.recipe import load_recipe, recipe_help

    if args.help_recipe:
        print(recipe_help())
        return 0
    if not args.recipe:
        raise UserError("train needs a recipe YAML (or --help-recipe)")
    recipe = load_recipe(*recipe_and_overrides(args))
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
    gauge = None
    if recipe.retention.enabled:  # its probes and DINOv2 are checked here, before the run folder is touched
        from omnideft.eval.retention import RetentionGauge

        gauge = RetentionGauge(recipe)
    faults = Faults.parse(os.environ.get("OMNIDEFT_FAULT", ""))  # test hooks; the kill/resume tests set it
    try:
        adapter = train(recipe, progress=not args.no_progress, validate=validate if validate.items else None,
                        resume=args.resume, faults=faults, overwrite=args.overwrite, gauge=gauge)
    except TrainingStopped as exc:
        if not report_stop(exc):  # under omnideft's own launcher, the launcher prints one line for every rank
            print(f"omnideft: {exc}", file=sys.stderr)
        return EXIT_STOPPED
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"adapter: {adapter}")
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
