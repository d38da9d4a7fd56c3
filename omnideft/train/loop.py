"""The training loop: recipe -> adapter folder. Reads top to bottom; one process, DDP or DeepSpeed ZeRO-1/2/3."""

from __future__ import annotations

import hashlib
import json
import math
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
import yaml
from accelerate.utils import gather_object, set_seed

from omnideft.adapters import apply_adapter
from omnideft.adapters.optim import build_optimizer, requires_plain_optimizer
from omnideft.camera.conditioning import setup_camera
from omnideft.data.loader import ResumableBatches, drawn_per_source, index_sources, sources_have_cameras
from omnideft.data.sources import resolve_sources
from omnideft.errors import UserError
from omnideft.files import write_text_atomic
from omnideft.model import load_omnigen, save_base
from omnideft.progress import progress_bar
from omnideft.prompts import OmniGenProcessor
from omnideft.train.batch import BatchBuilder, to_device, vae_encode
from omnideft.train.checkpoint import (
    LiveRun,
    adapter_state,
    check_compatible,
    check_same_base,
    find_resume,
    restore_checkpoint,
    save_adapter_folder,
    save_checkpoint,
)
from omnideft.train.ema import AdapterEMA
from omnideft.train.engine import make_engine
from omnideft.train.logs import RunLog
from omnideft.train.loss import rectified_flow_loss
from omnideft.train.recipe import Recipe
from omnideft.train.signals import StopRequests, TrainingStopped, fault


def train(recipe: Recipe, progress: bool = True, validate=None, resume: str | None = None) -> Path:
    """Train the recipe's adapter; returns the adapter folder. `resume` is None, "latest" or a checkpoint folder.
    `validate(model, components, step, out_dir, write)` renders fixed prompts (see generate/validation)."""
    cfg, out = recipe.train, Path(recipe.output.dir)
    sources = resolve_sources(recipe.data.shards)  # bad globs and empty shards fail before any model loads
    indexes = index_sources(sources)
    engine = make_engine(cfg.mixed_precision, recipe.launch.deepspeed, cfg.batch_size, cfg.grad_clip)
    acc = engine.accelerator
    rank, world, main = acc.process_index, acc.num_processes, acc.is_main_process
    spec = recipe.adapter  # the recipe's adapter section is the AdapterSpec
    if engine.deepspeed and (reason := requires_plain_optimizer(spec)):
        raise UserError(reason)
    if cfg.ema_decay and engine.zero_stage == 3:
        raise UserError("train.ema_decay is not supported with ZeRO-3 (partitioned adapter weights); use ZeRO-1/2")
    workers = data_workers(recipe.data.num_workers)
    layout = {"engine": engine.name, "world_size": world, "num_workers": workers}
    checkpoint = find_resume(out, resume)
    if checkpoint is not None:  # refuse another recipe or launch layout before anything is written
        check_compatible(checkpoint, recipe.to_dict(), layout)
    elif resume == "latest" and main:
        print(f"resume: no complete checkpoint in {out / 'checkpoints'}; starting from step 0", file=sys.stderr)

    set_seed(cfg.seed)
    comps = load_omnigen(recipe.model.name, revision=recipe.model.revision, seed=recipe.model.seed)
    base_name = recipe_base_name(recipe.model.name, out)
    if main:
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out / "recipe.yaml", yaml.safe_dump(recipe.to_dict(), sort_keys=False))
        if recipe.model.name == "tiny" and checkpoint is None:  # random weights: keep the exact base
            save_base(comps, out / "base")
    model = apply_adapter(comps.transformer, spec)
    # Camera conditioning (docs/camera.md): a trainable submodule of the transformer, attached after PEFT froze it.
    camera = setup_camera(comps.transformer, comps.tokenizer, recipe.camera, lambda: sources_have_cameras(indexes))
    if cfg.gradient_checkpointing:
        comps.transformer.enable_gradient_checkpointing()
    optimizer = build_optimizer(model, spec, cfg.lr, cfg.weight_decay, betas=tuple(cfg.betas))
    warmup = max(cfg.warmup_steps, 0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup) if warmup else 1.0)
    model, optimizer, scheduler = acc.prepare(model, optimizer, scheduler)
    vae = comps.vae.to(acc.device)
    peft_model = acc.unwrap_model(model)
    trainable = {n: p for n, p in peft_model.named_parameters() if p.requires_grad}
    run = LiveRun(engine, model, optimizer, scheduler, torch.Generator().manual_seed(cfg.seed * 7919 + rank),
                  trainable, base_name, recipe.to_dict(), layout,
                  ema=AdapterEMA(trainable, cfg.ema_decay) if cfg.ema_decay and main else None)
    if checkpoint:
        check_same_base(checkpoint, peft_model)
    start, data_state = restore_checkpoint(run, checkpoint) if checkpoint else (0, None)
    if checkpoint and main:
        print(f"resume: {checkpoint} (step {start})", file=sys.stderr)

    builder = BatchBuilder(OmniGenProcessor(comps.tokenizer, max_image_size=recipe.data.max_image_size),
                           recipe.data.condition_dropout, cfg.seed, camera=camera.prompt if camera else None)
    batches = iter(ResumableBatches(sources, indexes, seed=cfg.seed, batch_size=cfg.batch_size,
                                    size_of=builder.output_size, build=builder, rank=rank, world=world,
                                    num_workers=workers, resume=data_state).loader())
    log = RunLog(out, main, start, recipe.output.tensorboard, recipe.output.wandb_project, recipe.to_dict())
    bar = progress_bar(total=cfg.max_steps, initial=start, desc="train", disable=not (progress and main))
    task_loss: dict = defaultdict(lambda: [0.0, 0])
    bad_steps, t_start, step = 0, time.perf_counter(), start
    with StopRequests() as stop:
        for step in range(start + 1, cfg.max_steps + 1):
            t0 = time.perf_counter()
            batch = next(batches)
            if "error" in batch:
                raise UserError(batch["error"])
            reader, reader_state = batch.pop("data_state")
            run.reader_states[reader] = reader_state
            run.consumed += 1
            batch = to_device(batch, acc.device)
            t_data = time.perf_counter() - t0
            x1 = vae_encode(vae, batch["output_pixels"], run.noise)
            cond = dict(batch, input_img_latents=[vae_encode(vae, pv, run.noise) for pv in batch["input_pixel_values"]])
            with engine.autocast():
                per_sample = rectified_flow_loss(model, x1, cond, run.noise)
            loss = per_sample.mean()
            if fault("nan-loss", step):
                loss = loss * float("nan")
            # One collective per step: summed loss, non-finite ranks, stop requests.
            finite = bool(torch.isfinite(loss))
            flags = acc.reduce(torch.tensor([loss.item() if finite else 0.0, float(not finite),
                                             float(stop.received is not None)], device=acc.device), "sum")
            ok = flags[1].item() == 0
            grad_norm = None
            if ok:
                acc.backward(loss)  # under DeepSpeed this also steps the engine (optimizer, scheduler)
                grad_norm = _grad_norm(engine, acc, model, cfg.grad_clip)
                ok = grad_norm is None or math.isfinite(grad_norm)
                if ok:
                    optimizer.step()
                    scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            bad_steps = 0 if ok else bad_steps + 1
            if bad_steps >= cfg.max_bad_steps:
                raise UserError(f"{bad_steps} steps in a row had a non-finite loss or gradient (last at step {step}); "
                                "lower train.lr, enable train.grad_clip, or check the data")
            if ok and run.ema is not None:
                run.ema.update()
            for t, v in zip(batch["tasks"], per_sample.detach().float().tolist()):
                task_loss[t][0] += v
                task_loss[t][1] += 1

            loss_value = flags[0].item() / world if ok else float("nan")
            seconds = time.perf_counter() - t0
            record = {"step": step, "loss": loss_value if ok else None, "lr": scheduler.get_last_lr()[-1],
                      "grad_norm": grad_norm, "skipped_step": not ok, "samples_per_s": world * cfg.batch_size / seconds,
                      "tasks": batch["tasks"], "step_s": seconds, "data_s": t_data}
            if cfg.log_every and (step % cfg.log_every == 0 or step == cfg.max_steps):
                record["task_loss"] = _task_means(task_loss)
                task_loss.clear()
                if main and not progress:
                    print(f"step {step}/{cfg.max_steps} loss {loss_value:.4f} lr {record['lr']:.2e}", file=sys.stderr)
            log.step(record)
            bar.set_postfix(loss=f"{loss_value:.4f}", lr=f"{record['lr']:.2e}")
            bar.update()
            if validate is not None and validate.due(step, last=step == cfg.max_steps):
                _validate(validate, engine, peft_model, comps, step, out, log)
            fault("kill", step)
            stopping = flags[2].item() > 0
            if stopping or (cfg.checkpoint_every and (step % cfg.checkpoint_every == 0 or step == cfg.max_steps)):
                saved = save_checkpoint(run, out / "checkpoints", step, cfg.keep_checkpoints)
                if stopping:
                    bar.close()
                    log.close()
                    raise TrainingStopped(stop.received or "a signal on another rank", step, saved)
            fault("sigterm", step)
    bar.close()
    log.close()

    state = adapter_state(run)  # every rank: ZeRO-3 gathers
    digests = gather_object([_digest(state)])
    readers_per_rank = gather_object([run.reader_states])
    adapter_dir = out / "adapter"
    if main:
        save_adapter_folder(run, adapter_dir, step, state)
        summary = {"steps": step, "resumed_from": start or None, "seconds": time.perf_counter() - t_start,
                   "world_size": world, "engine": engine.name, "adapter_sha256_per_rank": digests,
                   "adapter_bytes": (adapter_dir / "adapter_model.safetensors").stat().st_size,
                   "skipped_samples": _sum_skipped(readers_per_rank),
                   "drawn_per_source": (drawn := _sum_drawn(sources, readers_per_rank)),
                   "realised_proportions": {k: v / max(sum(drawn.values()), 1) for k, v in drawn.items()},
                   "requested_proportions": {s.pattern: s.weight / sum(x.weight for x in sources) for s in sources}}
        write_text_atomic(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    acc.wait_for_everyone()
    return adapter_dir


def _grad_norm(engine, acc, model, grad_clip: float) -> float | None:
    if engine.deepspeed:
        norm = model.get_global_grad_norm()  # DeepSpeed clipped (gradient_clipping) and stepped already
        return float(norm) if norm is not None else None
    return float(acc.clip_grad_norm_(model.parameters(), grad_clip if grad_clip > 0 else float("inf")))


def _validate(validate, engine, peft_model, comps, step: int, out: Path, log: RunLog) -> None:
    """Main process renders; under ZeRO-3 every rank renders (the forward gathers sharded weights collectively)
    and only the main process writes."""
    acc = engine.accelerator
    if engine.zero_stage == 3 or acc.is_main_process:
        grid = validate(peft_model, comps, step, out, write=acc.is_main_process)
        if acc.is_main_process:
            log.image("validation", grid, step)
    acc.wait_for_everyone()


def _task_means(task_loss: dict) -> dict:
    return {t: s / n for t, (s, n) in sorted(task_loss.items()) if n}


def _digest(state: dict) -> str:
    h = hashlib.sha256()
    for k in sorted(state):
        h.update(k.encode())
        h.update(state[k].numpy().tobytes())
    return h.hexdigest()


def _sum_skipped(per_rank: list) -> dict:
    total: dict = defaultdict(int)
    for readers in per_rank:
        for st in readers.values():
            for reason, n in st.get("skipped", {}).items():
                total[reason] += n
    return dict(total)


def _sum_drawn(sources, per_rank: list) -> dict:
    total: dict = defaultdict(int)
    for readers in per_rank:
        for pattern, n in drawn_per_source(sources, readers).items():
            total[pattern] += n
    return dict(total)


def data_workers(setting: int) -> int:
    """`data.num_workers: -1` (auto): no background workers on a CPU-only machine, where decoding in another process
    only takes cores from the training threads (measured: benchmarks/trainer.py), else 2 per process."""
    if setting >= 0:
        return setting
    return 2 if torch.cuda.is_available() else 0


def recipe_base_name(name: str, out: Path) -> str:
    """What the adapter records as its base: local folders as absolute paths (a relative `runs/x/base` would read
    like a hub id `owner/name`), the saved random base for `tiny`, hub ids unchanged."""
    if name == "tiny":
        return str((out / "base").resolve())
    return str(Path(name).resolve()) if Path(name).exists() else name
