"""The training loop: recipe -> adapter folder; one process, DDP or DeepSpeed ZeRO-1/2/3. `train` reads top to
bottom: setup (train/setup.py), then per step a batch, one optimizer step (train/step.py) and what follows it
(the forgetting gauge, log, validate, checkpoint), then the final adapter and summary."""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import time
from collections import defaultdict
from pathlib import Path

from accelerate.utils import gather_object

from omnideft.adapters.folder import first_non_finite
from omnideft.data.loader import drawn_per_source
from omnideft.errors import UserError
from omnideft.files import atomic_path, write_text_atomic
from omnideft.train.checkpoint import adapter_state, save_adapter_folder, save_checkpoint
from omnideft.train.faults import NO_FAULTS, Faults
from omnideft.train.recipe import Recipe
from omnideft.train.retention import measure_retention
from omnideft.train.setup import TrainingRun, setup
from omnideft.train.signals import OTHER_RANK, StopRequests, TrainingStopped
from omnideft.train.step import StepRecord, train_step


def train(recipe: Recipe, progress: bool = True, validate=None, resume: str | None = None,
          faults: Faults = NO_FAULTS, overwrite: bool = False, gauge=None) -> Path:
    """Train the recipe's adapter; returns the adapter folder. `resume` is None, "latest" or a checkpoint folder;
    `overwrite` lets a fresh run replace a finished or resumable one in output.dir.
    `validate(model, components, step, out_dir, write)` renders fixed prompts (see generate/validation); `gauge` is
    the forgetting gauge of retention.enabled (eval/retention/gauge.py; train/retention.py drives it); `faults` are
    the tests' fault hooks (train/faults.py)."""
    run = setup(recipe, resume, progress, overwrite, gauge)
    try:
        with StopRequests() as stop:
            while run.step < recipe.train.max_steps and run.drift_stop is None:
                t0 = time.perf_counter()
                batch, reader_state = next(run.batches)
                run.live.took(reader_state)
                batch = run.training.to_device(batch, run.accelerator.device)
                data_s = time.perf_counter() - t0
                record = train_step(run, batch, stop, faults)
                record.data_s, record.step_s = data_s, time.perf_counter() - t0
                after_step(run, record, validate, stop, faults)
        return finish(run)
    finally:
        run.log.close()
        if run.lock is not None:
            run.lock.release()


def after_step(run: TrainingRun, record: StepRecord, validate, stop: StopRequests, faults: Faults) -> None:
    """Measure forgetting when due, log the step, render validation prompts when due, checkpoint when due or when a
    rank asked to stop; a drift over retention.max_drift ends the run here (no checkpoint of the state over it)."""
    cfg, step, main = run.recipe.train, record.step, run.accelerator.is_main_process
    for task, loss in zip(record.tasks, record.sample_losses):
        run.task_loss[task][0] += loss
        run.task_loss[task][1] += 1
    metrics = record.metrics(run.accelerator.num_processes * cfg.batch_size)
    if cfg.log_every and (step % cfg.log_every == 0 or step == cfg.max_steps):
        metrics["task_loss"] = {t: s / n for t, (s, n) in sorted(run.task_loss.items()) if n}
        run.task_loss.clear()
        if main and run.bar.disable:  # no progress bar: a line per logged step instead
            print(f"step {step}/{cfg.max_steps} loss {record.loss:.4f} lr {record.lr:.2e}", file=sys.stderr)
    if run.gauge is not None and run.gauge.due(step, last=step == cfg.max_steps):
        metrics.update(measure_retention(run, run.gauge))
    run.log.step(metrics)
    run.bar.set_postfix(loss=f"{record.loss:.4f}", lr=f"{record.lr:.2e}")
    run.bar.update()
    if validate is not None and validate.due(step, last=step == cfg.max_steps):
        _validate(run, validate)
    if run.drift_stop is not None:
        return
    faults.fire("kill", step)
    if record.stop_requested or (cfg.checkpoint_every and (step % cfg.checkpoint_every == 0 or step == cfg.max_steps)):
        saved = save_checkpoint(run.live, run.out / "checkpoints", step, cfg.keep_checkpoints, faults)
        if record.stop_requested:
            run.bar.close()
            run.log.close()
            raise TrainingStopped(stop.received or OTHER_RANK, step, saved)
    faults.fire("sigterm", step)


def finish(run: TrainingRun) -> Path:
    """All ranks: gather the adapter (ZeRO-3 partitions it); the main process writes it and summary.json."""
    run.bar.close()
    run.log.close()
    if run.drift_stop is not None:
        return finish_within_limit(run)
    acc = run.accelerator
    state = adapter_state(run.live)
    # Never a result from garbage: every rank checks (they hold the same adapter) so all stop together.
    if (bad := first_non_finite(state)) is not None:
        raise UserError(f"training diverged: adapter tensor {bad} is not finite at step {run.step}; the adapter was "
                        "not saved (lower train.lr, enable train.grad_clip, or check the data; the last good "
                        f"checkpoint in {run.out / 'checkpoints'} can be resumed)")
    if run.step > run.start and run.good_steps == 0:
        raise UserError(f"every step from {run.start + 1} to {run.step} had a non-finite loss or gradient; nothing "
                        "was learned and the adapter was not saved (lower train.lr or check the data)")
    digests = gather_object([_digest(state)])
    # what each rank stores of the adapter: all of it, or its ZeRO-3 partition (ds_tensor) - the proof it was split
    held = gather_object([sum(getattr(p, "ds_tensor", p).numel() for p in run.live.trainable.values())])
    readers_per_rank = gather_object([run.live.reader_states])
    adapter_dir = run.out / "adapter"
    if acc.is_main_process:
        save_adapter_folder(run.live, adapter_dir, run.step, state)
        drawn = _sum_drawn(run.sources, readers_per_rank)
        summary = {"steps": run.step, "resumed_from": run.start or None, "seconds": time.perf_counter() - run.started,
                   "world_size": acc.num_processes, "engine": run.engine.name, "adapter_sha256_per_rank": digests,
                   "adapter_numel": sum(t.numel() for t in state.values()), "adapter_numel_held_per_rank": held,
                   "adapter_bytes": (adapter_dir / "adapter_model.safetensors").stat().st_size,
                   "skipped_samples": _sum_skipped(readers_per_rank), "drawn_per_source": drawn,
                   "realised_proportions": {k: v / max(sum(drawn.values()), 1) for k, v in drawn.items()},
                   "requested_proportions": {s.pattern: s.weight / sum(x.weight for x in run.sources)
                                             for s in run.sources}}
        write_text_atomic(run.out / "summary.json", json.dumps(summary, indent=2) + "\n")
    acc.wait_for_everyone()
    return adapter_dir


def finish_within_limit(run: TrainingRun) -> Path:
    """A run a drift over retention.max_drift stopped: its adapter is the one kept at the last validation within
    the limit (train/retention.py); summary.json says so."""
    acc = run.accelerator
    readers_per_rank = gather_object([run.live.reader_states])
    adapter_dir = run.out / "adapter"
    if acc.is_main_process:
        with atomic_path(adapter_dir, replace=True) as tmp:
            shutil.copytree(run.gauge.kept_folder(run.out), tmp)
        drawn = _sum_drawn(run.sources, readers_per_rank)
        summary = {"steps": run.step, "resumed_from": run.start or None, "seconds": time.perf_counter() - run.started,
                   "world_size": acc.num_processes, "engine": run.engine.name,
                   "adapter_step": run.drift_stop["adapter_step"], "stopped_by_max_drift": run.drift_stop,
                   "adapter_bytes": (adapter_dir / "adapter_model.safetensors").stat().st_size,
                   "skipped_samples": _sum_skipped(readers_per_rank), "drawn_per_source": drawn}
        write_text_atomic(run.out / "summary.json", json.dumps(summary, indent=2) + "\n")
    acc.wait_for_everyone()
    return adapter_dir


def _validate(run: TrainingRun, validate) -> None:
    """Main process renders; under ZeRO-3 every rank renders (the forward gathers sharded weights collectively)
    and only the main process writes."""
    acc = run.accelerator
    if run.engine.zero_stage == 3 or acc.is_main_process:
        grid = validate(run.live.adapted, run.components, run.step, run.out, write=acc.is_main_process)
        if acc.is_main_process:
            run.log.image("validation", grid, run.step)
    acc.wait_for_everyone()


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
