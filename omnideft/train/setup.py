"""Everything before the first training step: recipe -> a `TrainingRun` (engine, adapted model, optimizer, data,
logs), restored from a checkpoint when resuming. Checks that need no model (shard globs, the checkpoint's recipe and
launch layout, engine limits, the output folder's lock and contents) run before any model loads, and nothing is
written into output.dir (not `base/`, not `recipe.yaml`, not `metrics.jsonl`) until every check has passed."""

from __future__ import annotations

import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import torch
import yaml
from accelerate.utils import set_seed

from omnideft.adapters import apply_adapter
from omnideft.adapters.fingerprint import adapter_tensor, weights_fingerprint
from omnideft.adapters.optim import build_optimizer, requires_plain_optimizer
from omnideft.adapters.registry import get_method
from omnideft.data.loader import ReaderState, ResumableBatches, index_sources, sources_have_cameras
from omnideft.data.sources import ShardSource, resolve_sources
from omnideft.errors import UserError
from omnideft.families.family import ModelFamily, TrainingBackend
from omnideft.families.registry import is_preset, resolve_family
from omnideft.files import atomic_path, remove_path, write_text_atomic
from omnideft.flow.latents import LatentCache, vae_fingerprint
from omnideft.locks import FolderLock
from omnideft.model.quantize import check_quantization, quantize_base
from omnideft.plan.presets import resolve_memory
from omnideft.progress import progress_bar
from omnideft.train.checkpoint import (
    LiveRun,
    check_compatible,
    check_same_base,
    complete_checkpoints,
    find_resume,
    restore_checkpoint,
)
from omnideft.train.ema import AdapterEMA
from omnideft.train.engine import Engine, make_engine
from omnideft.train.logs import RunLog
from omnideft.train.recipe import Recipe


@dataclass
class TrainingRun:
    """What `setup` builds; the step and the after-step read it and advance `step`, `bad_steps` and `task_loss`."""
    recipe: Recipe
    out: Path
    engine: Engine
    family: ModelFamily  # the base's (recorded in every adapter and checkpoint the run writes)
    training: TrainingBackend  # the family's batches and loss for this recipe
    components: object  # the family's components: frozen parts (VAE, ...) on the device; the transformer is in `live`
    live: LiveRun  # what a checkpoint captures: model as prepared, optimizer, scheduler, noise, reader states, EMA
    sources: list[ShardSource]
    batches: Iterator[tuple[dict, ReaderState]]
    log: RunLog
    bar: object  # tqdm; disabled off the main process and without progress
    start: int  # the step a resumed run continues after (0 for a new run)
    step: int  # the last finished step
    lock: FolderLock | None = None  # output.dir's lock, held by the main process until the run ends
    gauge: object = None  # the forgetting gauge (eval/retention/gauge.py) when retention.enabled, else None
    drift_stop: dict | None = None  # set when a validation's drift exceeded retention.max_drift: the run ends there
    started: float = field(default_factory=time.perf_counter)
    bad_steps: int = 0  # non-finite steps in a row
    good_steps: int = 0  # steps this process applied (a run where none was applied produced nothing)
    task_loss: dict = field(default_factory=lambda: defaultdict(lambda: [0.0, 0]))  # task -> [sum, count] since log

    @property
    def accelerator(self):
        return self.engine.accelerator


# What a run writes into output.dir; --overwrite removes exactly these before a fresh run writes its own.
RUN_FILES = ("adapter", "checkpoints", "summary.json", "metrics.jsonl", "tensorboard", "validation", "base",
             "recipe.yaml", "wandb", "retention", "retention.json", "retention.png")


def setup(recipe: Recipe, resume: str | None = None, progress: bool = True, overwrite: bool = False,
          gauge=None) -> TrainingRun:
    """`resume` is None, "latest" or a checkpoint folder; `overwrite` lets a fresh run replace a finished or
    resumable run in output.dir; `gauge`: the forgetting gauge (retention.enabled), which answers its probes with
    the bare base here. The main process holds output.dir's lock in `run.lock`; the caller releases it."""
    cfg, out = recipe.train, Path(recipe.output.dir)
    sources = resolve_sources(recipe.data.shards)  # bad globs and empty shards fail before any model loads
    indexes = index_sources(sources)
    engine = make_engine(cfg.mixed_precision, recipe.launch.deepspeed, cfg.batch_size, cfg.grad_clip)
    acc = engine.accelerator
    recipe = resolve_memory(recipe, gpu_memory(acc.device))  # train.memory's switches (docs/memory.md)
    cfg = recipe.train
    check_quantization(recipe.model.quantize)
    if engine.deepspeed and recipe.model.quantize not in (None, "bf16"):
        raise UserError(f"model.quantize={recipe.model.quantize} does not run under DeepSpeed (it re-casts every "
                        "parameter); launch without launch.deepspeed (DDP or one process), or use model.quantize=bf16")
    world, main = acc.num_processes, acc.is_main_process
    spec = recipe.adapter  # the recipe's adapter section is the AdapterSpec
    if engine.deepspeed and (reason := requires_plain_optimizer(spec)):
        raise UserError(reason)
    if cfg.ema_decay and engine.zero_stage == 3:
        raise UserError("train.ema_decay is not supported with ZeRO-3 (partitioned adapter weights); use ZeRO-1/2")
    if recipe.retention.enabled and gauge is None:
        raise UserError("retention.enabled: the forgetting gauge is built by `omnideft train` (or pass train(..., "
                        "gauge=RetentionGauge(recipe)))")
    family = resolve_family(recipe.model.name, recipe.model.family)
    training = family.training(recipe)  # refuses what the family does not take, before any model loads
    workers = data_workers(recipe.data.num_workers)
    layout = {"engine": engine.name, "world_size": world, "num_workers": workers}
    lock = FolderLock(out, "output.dir").acquire() if main else None
    try:
        return _prepare(recipe, resume, progress, overwrite, engine, sources, indexes, layout, lock, family,
                        training, gauge)
    except BaseException:
        if lock is not None:
            lock.release()
        raise


def _prepare(recipe: Recipe, resume, progress: bool, overwrite: bool, engine: Engine, sources, indexes,
             layout: dict, lock, family: ModelFamily, training: TrainingBackend, gauge) -> TrainingRun:
    """`setup` once output.dir is locked: checks against what the folder holds, the model, then the first writes."""
    cfg, out, spec = recipe.train, Path(recipe.output.dir), recipe.adapter
    acc = engine.accelerator
    rank, world, main = acc.process_index, acc.num_processes, acc.is_main_process
    warn = (lambda message: print(message, file=sys.stderr)) if main else (lambda message: None)
    checkpoint = find_resume(out, resume, warn)
    if checkpoint is not None:  # refuse another recipe or launch layout before anything is written
        check_compatible(checkpoint, recipe.to_dict(), layout, family.name)
    else:
        if resume == "latest":
            warn(f"resume: no complete checkpoint in {out / 'checkpoints'}; starting from step 0")
        if (held := previous_run(out)) and not overwrite:
            resumable = "" if resume else "continue it with --resume latest, "
            raise UserError(f"output.dir {out} already holds a run ({held}); {resumable}pass --overwrite to replace "
                            "it, or choose another output.dir")

    set_seed(cfg.seed)
    comps = training.load(acc.device)
    base_weights = weights_fingerprint(comps.transformer)  # before any adapter wraps the base layers
    if gauge is not None and main:  # the base's answers, before any adapter touches it
        base_answers(gauge, comps, acc.device, out, resuming=checkpoint is not None)
    latents = None
    if recipe.data.latents:  # a stale, damaged or foreign cache is refused before anything is written
        latents = LatentCache(recipe.data.latents, vae_fingerprint(comps.vae), recipe.data.max_image_size, sources)
    model = apply_adapter(comps.transformer, spec, targets=family.target_modules)
    training.after_adapter(comps, spec)  # e.g. adapter.mllm_targets: an adapter on the MLLM too
    if engine.zero_stage == 3:  # e.g. DEFT: parameters its layers read outside their own module's forward
        get_method(spec.method).before_zero3(model)
    if recipe.model.quantize:  # after injection: PEFT initialises DEFT from the full-precision weights
        quantize_base(comps.transformer, recipe.model.quantize, exclude=adapter_tensor())
    # Camera conditioning (docs/camera.md): a trainable submodule of the transformer, attached after PEFT froze it.
    camera = training.camera(comps, recipe.camera, lambda: sources_have_cameras(indexes))
    if cfg.gradient_checkpointing:
        comps.transformer.enable_gradient_checkpointing()
    optimizer = build_optimizer(model, spec, cfg.lr, cfg.weight_decay, betas=tuple(cfg.betas))
    warmup = max(cfg.warmup_steps, 0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup) if warmup else 1.0)
    model, optimizer, scheduler = acc.prepare(model, optimizer, scheduler)
    if latents is None or recipe.validation.every or recipe.validation.prompts or gauge is not None:
        comps.vae.to(acc.device)  # with a latent cache only validation renders need the VAE on the GPU
    adapted = acc.unwrap_model(model)
    trainable = {n: p for n, p in adapted.named_parameters() if p.requires_grad}
    live = LiveRun(engine, model, optimizer, scheduler, torch.Generator().manual_seed(cfg.seed * 7919 + rank),
                   trainable, recipe_base_name(recipe.model.name, out), family.name, recipe.to_dict(), layout,
                   ema=AdapterEMA(trainable, cfg.ema_decay) if cfg.ema_decay and main else None,
                   base_weights=base_weights)
    if checkpoint:
        check_same_base(checkpoint, adapted)
    start, data_state = restore_checkpoint(live, checkpoint) if checkpoint else (0, None)
    if checkpoint and main:
        print(f"resume: {checkpoint} (step {start})", file=sys.stderr)

    builder = training.batch_builder(comps, latents=latents, camera=camera)
    batches = ResumableBatches(sources, indexes, seed=cfg.seed, batch_size=cfg.batch_size,
                               size_of=builder.output_size, build=builder, rank=rank, world=world,
                               num_workers=layout["num_workers"], resume=data_state).loader()
    if main:  # every check passed: the first writes into output.dir
        if checkpoint is None:
            for name in RUN_FILES:
                remove_path(out / name)
        write_text_atomic(out / "recipe.yaml", yaml.safe_dump(recipe.to_dict(), sort_keys=False))
        if gauge is not None:
            gauge.begin(out, start)
        if recipe.model.name == "tiny" and checkpoint is None:  # random weights: keep the exact base
            # the live transformer now carries the adapter: a fresh copy, into the run folder's own (locked) base/
            with atomic_path(out / "base", replace=True) as tmp:
                training.save_base(training.load("cpu"), tmp)
    log = RunLog(out, main, start, recipe.output.tensorboard, recipe.output.wandb_project, recipe.to_dict())
    bar = progress_bar(total=cfg.max_steps, initial=start, desc="train", disable=not (progress and main))
    return TrainingRun(recipe, out, engine, family, training, comps, live, sources, batches, log, bar, start=start,
                       step=start, lock=lock, gauge=gauge)


def base_answers(gauge, components, device, out: Path, resuming: bool) -> None:
    """The gauge's probes answered by the bare base on the training device (kept from the run folder when a resumed
    run has them): the transformer visits `device` and returns where it was, so the adapter is injected as without
    the gauge."""
    home = next(components.transformer.parameters()).device
    components.vae.to(device)
    components.transformer.to(device)
    try:
        gauge.prepare(components, device, out, resuming)
    finally:
        components.transformer.to(home)


def previous_run(out: Path) -> str:
    """What of a finished or resumable run `out` holds ("" when none): a fresh run there would replace it."""
    found = [name + "/" for name in ("adapter",) if (out / name).is_dir()]
    found += [f"checkpoints/{c.name}" for c in complete_checkpoints(out / "checkpoints")[-1:]]
    return ", ".join(found)


def gpu_memory(device) -> int | None:
    """Total memory of the CUDA device in use, None on a CPU (train.memory=auto then switches nothing)."""
    if getattr(device, "type", str(device)) != "cuda":
        return None
    return torch.cuda.get_device_properties(device).total_memory


def data_workers(setting: int) -> int:
    """`data.num_workers: -1` (auto): no background workers on a CPU-only machine, where decoding in another process
    only takes cores from the training threads (measured: benchmarks/trainer.py), else 2 per process."""
    if setting >= 0:
        return setting
    return 2 if torch.cuda.is_available() else 0


def recipe_base_name(name: str, out: Path) -> str:
    """What the adapter records as its base: local folders as absolute paths (a relative `runs/x/base` would read
    like a hub id `owner/name`), the saved random base for `tiny`, hub ids and `small` unchanged."""
    if name == "tiny":
        return str((out / "base").resolve())
    if is_preset(name):  # a preset, even where a folder of that name exists (the family loads it so too)
        return name
    return str(Path(name).resolve()) if Path(name).exists() else name
