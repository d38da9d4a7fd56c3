"""The engine a run uses — one process, DDP, or DeepSpeed ZeRO-1/2/3 — always through accelerate.

DeepSpeed is chosen by `launch.deepspeed` (a DeepSpeed JSON; for processes started by torchrun, srun or the
deepspeed launcher) or by an accelerate config with `distributed_type: DEEPSPEED` (`launch.config`). Mixed precision
stays ours: DeepSpeed runs in fp32 and the transformer forward runs under torch autocast, so adapter parameters,
gradients and optimizer state stay fp32 under every engine. A DeepSpeed JSON that enables bf16/fp16 itself is
honoured (DeepSpeed then casts the module).
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import re
import socket
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState
from accelerate.utils import DeepSpeedPlugin, InitProcessGroupKwargs

from omnideft.errors import UserError


@dataclass
class Engine:
    accelerator: Accelerator
    name: str  # "single" | "ddp" | "zero1" | "zero2" | "zero3"
    zero_stage: int | None
    autocast_dtype: torch.dtype | None

    @property
    def deepspeed(self) -> bool:
        return self.zero_stage is not None

    def autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.accelerator.device.type, dtype=self.autocast_dtype)


def make_engine(mixed_precision: str, deepspeed_config: str | None, batch_size: int, grad_clip: float) -> Engine:
    several = _world_size() > 1
    if not several:
        # accelerate's state is process-global; a second run in one process (a notebook, a sweep) may change
        # engine or precision. Only single-process state is reset: a process group must outlive one run.
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
    ds_path = os.environ.get("ACCELERATE_DEEPSPEED_CONFIG_FILE") if _env_true("ACCELERATE_USE_DEEPSPEED") else None
    ds_path = ds_path or deepspeed_config
    cuda = torch.cuda.is_available()
    # Without CUDA several processes form a gloo group; accelerate only does that when asked explicitly.
    handlers = [InitProcessGroupKwargs(backend="gloo")] if several and not cuda else []
    autocast = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mixed_precision)
    if ds_path is None:
        acc = Accelerator(mixed_precision="no", cpu=not cuda, kwargs_handlers=handlers,
                          step_scheduler_with_optimizer=False)
        return Engine(acc, "ddp" if acc.num_processes > 1 else "single", None, autocast)
    config = load_deepspeed_config(ds_path)
    if "RANK" not in os.environ:
        _single_process_rendezvous()  # else DeepSpeed looks for MPI to discover its one rank
    stage = int(config.get("zero_optimization", {}).get("stage", 0))
    if stage not in (1, 2, 3):
        raise UserError(f"DeepSpeed config {ds_path}: zero_optimization.stage must be 1, 2 or 3, got {stage}")
    if _enabled(config, "bf16") or _enabled(config, "fp16"):
        autocast = None  # DeepSpeed-managed precision
    _fill_auto(config, ds_path, batch_size, grad_clip, _world_size())
    if not cuda:
        _skip_cpu_shm_kernel()
    acc = Accelerator(mixed_precision="no", deepspeed_plugin=DeepSpeedPlugin(hf_ds_config=config),
                      kwargs_handlers=handlers, step_scheduler_with_optimizer=False)
    return Engine(acc, f"zero{stage}", stage, autocast)


def _single_process_rendezvous() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    os.environ.update({"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "LOCAL_WORLD_SIZE": "1",
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})


def _skip_cpu_shm_kernel() -> None:
    """DeepSpeed's CPU backend JIT-compiles a shared-memory all-reduce kernel on first use (minutes on a small
    machine) that only speeds up CPU inference collectives; CPU training runs (the tests) use plain gloo."""
    import deepspeed.ops  # DeepSpeed is an optional extra: imported only by runs that use it

    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False


def load_deepspeed_config(path: str) -> dict:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"DeepSpeed config {path} not found")
    try:
        config = json.loads(p.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"DeepSpeed config {path} is not valid JSON: {exc}") from None
    if not isinstance(config, dict):
        raise UserError(f"DeepSpeed config {path} must be a JSON object")
    for key in ("optimizer", "scheduler"):
        if key in config:
            raise UserError(f"DeepSpeed config {path}: remove {key!r}; the recipe's train section defines it")
    if config.get("zero_optimization", {}).get("compute_grad_norm") is False:
        raise UserError(f"DeepSpeed config {path}: zero_optimization.compute_grad_norm must stay true: the step "
                        "is skipped when the gradient norm is not finite")
    return config


def _fill_auto(config: dict, path: str, batch_size: int, grad_clip: float, world: int) -> None:
    """Resolve "auto" from the recipe and the process count; explicit values must agree with them."""
    accum = config.get("gradient_accumulation_steps", "auto")
    if accum == "auto":
        accum = config["gradient_accumulation_steps"] = 1
    if accum != 1:
        raise UserError(f"DeepSpeed config {path}: gradient_accumulation_steps must be 1 or \"auto\" "
                        "(omnideft steps the optimizer every batch)")
    micro = config.get("train_micro_batch_size_per_gpu", "auto")
    if micro == "auto":
        micro = config["train_micro_batch_size_per_gpu"] = batch_size
    elif micro != batch_size:
        raise UserError(f"DeepSpeed config {path}: train_micro_batch_size_per_gpu {micro} differs from "
                        f"train.batch_size {batch_size}")
    total = config.get("train_batch_size", "auto")
    if total == "auto":
        config["train_batch_size"] = micro * world
    elif total != micro * world:
        raise UserError(f"DeepSpeed config {path}: train_batch_size {total} does not match {world} processes x "
                        f"batch {micro}; use \"auto\" or launch {total // max(micro, 1)} processes")
    if config.get("gradient_clipping", "auto") == "auto":
        config["gradient_clipping"] = float(grad_clip)
    for dtype in ("bf16", "fp16"):
        section = config.setdefault(dtype, {})
        if section.get("enabled", "auto") == "auto":
            section["enabled"] = False
    config["zero_allow_untested_optimizer"] = True  # torch AdamW over the adapter parameters
    config.setdefault("steps_per_print", 10**9)  # our progress bar and logs report; DeepSpeed stays quiet


def _enabled(config: dict, key: str) -> bool:
    return config.get(key, {}).get("enabled") is True


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").lower() in ("1", "true", "yes")


def _world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


@contextlib.contextmanager
def gathered(params: list, engine: Engine):
    """Full values of (possibly ZeRO-3-partitioned) parameters on every rank; all ranks must enter."""
    if engine.zero_stage == 3:
        import deepspeed  # optional extra, present when ZeRO-3 runs

        with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
            yield
    else:
        yield


def deepspeed_state_types() -> list:
    """The objects DeepSpeed pickles into its checkpoint files besides tensors and plain containers (ZeRO-1/2/3,
    fp32, bf16, fp16 with its dynamic loss scaler): what a weights-only load of them allows, and nothing more."""
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    return [LossScaler, DynamicLossScaler, ZeroStageEnum, fragment_address]


def load_deepspeed_state(path, map_location=None):
    """DeepSpeed's own loader unpickles with weights_only=False, which runs whatever code a pickle names; this one
    is weights-only with just DeepSpeed's state types allowed, so a file carrying anything else is one line naming
    it and nothing in it runs."""
    try:
        with torch.serialization.safe_globals(deepspeed_state_types()):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported global: GLOBAL (\S+)|Unsupported operand \S+|Unsupported class \S+", str(exc))
        what = (found.group(1) or found.group(0)) if found else str(exc).splitlines()[0][:200]
        raise UserError(f"{path} holds a pickled object that is not DeepSpeed training state ({what}); it is not "
                        "loaded: resume from a checkpoint you trust") from None


def load_deepspeed_weights_only(model) -> None:
    """Make a DeepSpeed engine read its checkpoint files through load_deepspeed_state (all its loads go through
    `checkpoint_engine.load`: model states, ZeRO optimizer partitions)."""
    model.checkpoint_engine.load = load_deepspeed_state
