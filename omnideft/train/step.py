"""One optimizer step on every rank: the family's per-sample loss -> one cross-rank vote -> backward -> clip -> step,
or a skipped step when any rank's loss or the gradient is not finite."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from omnideft.errors import UserError
from omnideft.train.faults import Faults
from omnideft.train.setup import TrainingRun
from omnideft.train.signals import StopRequests
from omnideft.train.vote import StepVote


@dataclass
class StepRecord:
    step: int
    loss: float  # mean over the ranks; nan when the step was skipped
    skipped: bool
    lr: float
    grad_norm: float | None
    tasks: list[str]  # this rank's samples
    sample_losses: list[float]  # this rank's per-sample losses, in the order of `tasks`
    stop_requested: bool  # some rank received a stop signal: checkpoint and stop after this step
    data_s: float = 0.0
    step_s: float = 0.0

    def metrics(self, samples_per_step: int) -> dict:
        """The metrics.jsonl line; `samples_per_step` counts every rank's samples."""
        return {"step": self.step, "loss": None if self.skipped else self.loss, "lr": self.lr,
                "grad_norm": self.grad_norm, "skipped_step": self.skipped,
                "samples_per_s": samples_per_step / self.step_s, "tasks": self.tasks, "step_s": self.step_s,
                "data_s": self.data_s}


def train_step(run: TrainingRun, batch: dict, stop: StopRequests, faults: Faults) -> StepRecord:
    """All ranks call, with a batch already on the device. Advances `run.step`."""
    acc, live, cfg = run.accelerator, run.live, run.recipe.train
    step = run.step + 1
    per_sample = run.training.loss(live.model, run.components, batch, live.noise, run.engine.autocast)
    loss = per_sample.mean()
    if faults.fire("nan-loss", step):
        loss = loss * float("nan")
    if faults.fire("nan-grad", step):
        loss = NanGradient.apply(loss)
    finite = bool(torch.isfinite(loss))
    vote = StepVote(loss=loss.item() if finite else 0.0, nonfinite=int(not finite),
                    stop=int(stop.received is not None)).summed(acc)
    ok, grad_norm = vote.nonfinite == 0, None
    if ok:
        acc.backward(loss)  # under DeepSpeed this also steps the engine (optimizer, scheduler)
        grad_norm = _grad_norm(run, cfg.grad_clip)
        ok = grad_norm is None or math.isfinite(grad_norm)
        if ok:
            live.optimizer.step()
            live.scheduler.step()
        live.optimizer.zero_grad(set_to_none=True)
    run.bad_steps = 0 if ok else run.bad_steps + 1
    run.good_steps += int(ok)
    if run.bad_steps >= cfg.max_bad_steps:
        raise UserError(f"{run.bad_steps} steps in a row had a non-finite loss or gradient (last at step {step}); "
                        "lower train.lr, enable train.grad_clip, or check the data")
    if ok and live.ema is not None:
        live.ema.update()
    run.step = step
    return StepRecord(step, vote.loss / acc.num_processes if ok else float("nan"), not ok,
                      live.scheduler.get_last_lr()[-1], grad_norm, batch["tasks"],
                      per_sample.detach().float().tolist(), vote.stop > 0)


def _grad_norm(run: TrainingRun, grad_clip: float) -> float | None:
    if run.engine.deepspeed:
        # DeepSpeed clipped (gradient_clipping) and stepped already; its ZeRO optimizers skip a step whose gradient
        # norm is not finite (zero_optimization.compute_grad_norm, required by train/engine.py) and report it as inf.
        engine = run.live.model
        if not engine.was_step_applied():
            return float("inf")
        norm = engine.get_global_grad_norm()
        return float(norm) if norm is not None else None
    return float(run.accelerator.clip_grad_norm_(run.live.model.parameters(),
                                                 grad_clip if grad_clip > 0 else float("inf")))


class NanGradient(torch.autograd.Function):
    """The `nan-grad` fault: the loss is unchanged, its gradient becomes NaN (a finite loss with a non-finite
    gradient, which only the gradient check catches)."""

    @staticmethod
    def forward(ctx, loss):
        return loss.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * float("nan")
