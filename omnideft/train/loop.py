"""The training loop: recipe -> adapter folder. Reads top to bottom; plain process or `accelerate launch`."""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path

import torch
import yaml
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState
from accelerate.utils import InitProcessGroupKwargs, set_seed

from omnideft.adapters import AdapterSpec, apply_adapter, save_adapter
from omnideft.adapters.optim import build_optimizer
from omnideft.data.shards import ShardStream, bucket_batches
from omnideft.data.sources import resolve_sources
from omnideft.files import write_text_atomic
from omnideft.model import load_omnigen, save_base
from omnideft.progress import progress_bar
from omnideft.prompts import OmniGenProcessor
from omnideft.train.batch import BatchBuilder, to_device, vae_encode
from omnideft.train.loss import rectified_flow_loss
from omnideft.train.recipe import Recipe


def train(recipe: Recipe, progress: bool = True, validate=None) -> Path:
    """Train the recipe's adapter; returns the adapter folder. `validate(model, components, step, out_dir)` is
    called on the main process every `validation.every` steps and after the last one (see generate/validation)."""
    cfg = recipe.train
    out = Path(recipe.output.dir)
    sources = resolve_sources(recipe.data.shards)  # bad globs fail before any model loads

    accelerator = make_accelerator(cfg.mixed_precision)
    set_seed(cfg.seed)
    rank = accelerator.process_index
    main = accelerator.is_main_process

    comps = load_omnigen(recipe.model.name, revision=recipe.model.revision, seed=recipe.model.seed)
    if main:
        out.mkdir(parents=True, exist_ok=True)
        _write_recipe(recipe, out / "recipe.yaml")
        if recipe.model.name == "tiny":  # random weights: keep the exact base the adapter belongs to
            save_base(comps, out / "base")
    base_name = recipe_base_name(recipe.model.name, out)

    spec = AdapterSpec(**vars(recipe.adapter))
    model = apply_adapter(comps.transformer, spec)
    if cfg.gradient_checkpointing:
        comps.transformer.enable_gradient_checkpointing()
    optimizer = build_optimizer(model, spec, cfg.lr, cfg.weight_decay, betas=tuple(cfg.betas))
    warmup = max(cfg.warmup_steps, 0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup) if warmup else 1.0)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    vae = comps.vae.to(accelerator.device)

    processor = OmniGenProcessor(comps.tokenizer, max_image_size=recipe.data.max_image_size)
    builder = BatchBuilder(processor, recipe.data.condition_dropout, cfg.seed + rank)
    stream = ShardStream(sources, seed=cfg.seed + 1000 * rank, shuffle_buffer=recipe.data.shuffle_buffer)
    batches = bucket_batches(iter(stream), cfg.batch_size, builder.output_size)
    noise = torch.Generator().manual_seed(cfg.seed * 7919 + rank)  # timesteps, noise, VAE sampling

    metrics = (out / "metrics.jsonl").open("w") if main else None
    bar = progress_bar(total=cfg.max_steps, desc="train", disable=not (progress and main))
    t_start = time.perf_counter()
    for step in range(1, cfg.max_steps + 1):
        t0 = time.perf_counter()
        batch = to_device(builder(next(batches)), accelerator.device)
        t_data = time.perf_counter() - t0
        x1 = vae_encode(vae, batch["output_pixels"], noise)
        cond = dict(batch, input_img_latents=[vae_encode(vae, pv, noise) for pv in batch["input_pixel_values"]])
        with accelerator.autocast():
            per_sample = rectified_flow_loss(model, x1, cond, noise)
        loss = per_sample.mean()
        accelerator.backward(loss)
        grad_norm = accelerator.clip_grad_norm_(model.parameters(), cfg.grad_clip) if cfg.grad_clip > 0 else None
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)

        loss_value = accelerator.gather(loss.detach().reshape(1)).mean().item()
        if not math.isfinite(loss_value):
            raise FloatingPointError(f"loss became {loss_value} at step {step}")
        record = {"step": step, "loss": loss_value, "lr": scheduler.get_last_lr()[-1],
                  "grad_norm": float(grad_norm) if grad_norm is not None else None,
                  "tasks": batch["tasks"], "step_s": time.perf_counter() - t0, "data_s": t_data}
        if metrics:
            metrics.write(json.dumps(record) + "\n")
        bar.set_postfix(loss=f"{loss_value:.4f}", lr=f"{record['lr']:.2e}")
        bar.update()
        if main and not progress and cfg.log_every and step % cfg.log_every == 0:
            print(f"step {step}/{cfg.max_steps} loss {loss_value:.4f} lr {record['lr']:.2e}", file=sys.stderr)
        if validate is not None and validate.due(step, last=step == cfg.max_steps):
            if main:
                validate(accelerator.unwrap_model(model), comps, step, out)
            accelerator.wait_for_everyone()
        if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < cfg.max_steps:
            _save(accelerator, model, out / "checkpoints" / f"step-{step:07d}", base_name, recipe, step)
    bar.close()
    if metrics:
        metrics.close()
    adapter_dir = _save(accelerator, model, out / "adapter", base_name, recipe, cfg.max_steps)
    if main:
        summary = {"steps": cfg.max_steps, "seconds": time.perf_counter() - t_start,
                   "world_size": accelerator.num_processes,
                   "skipped_samples": dict(stream.skipped), "drawn_per_source": dict(stream.drawn)}
        write_text_atomic(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    accelerator.wait_for_everyone()
    return adapter_dir


def recipe_base_name(name: str, out: Path) -> str:
    """What the adapter records as its base: local folders as absolute paths (a relative `runs/x/base` would read
    like a hub id `owner/name`), the saved random base for `tiny`, hub ids unchanged."""
    if name == "tiny":
        return str((out / "base").resolve())
    return str(Path(name).resolve()) if Path(name).exists() else name


def make_accelerator(mixed_precision: str) -> Accelerator:
    """On machines without CUDA, several processes (torchrun / accelerate launch) form a gloo group:
    accelerate only does that when asked for the CPU explicitly."""
    several = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if not several:
        # accelerate's state is process-global; a second run in one process (a notebook, a sweep) may change
        # mixed precision. Only single-process state is reset: a process group must outlive one run.
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
    if torch.cuda.is_available():
        return Accelerator(mixed_precision=mixed_precision)
    handlers = [InitProcessGroupKwargs(backend="gloo")] if several else []
    return Accelerator(mixed_precision=mixed_precision, cpu=True, kwargs_handlers=handlers)


def _save(accelerator, model, folder: Path, base_name: str, recipe: Recipe, step: int) -> Path:
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        save_adapter(accelerator.unwrap_model(model), folder, base_name=base_name, recipe=recipe.to_dict(), step=step)
        _write_recipe(recipe, folder / "recipe.yaml")
    return folder


def _write_recipe(recipe: Recipe, path: Path) -> None:
    write_text_atomic(path, yaml.safe_dump(recipe.to_dict(), sort_keys=False))
