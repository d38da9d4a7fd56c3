"""Resumable checkpoints: `<out>/checkpoints/step-NNNNNNN/` is a usable adapter folder plus `trainer/`:

    trainer/state.json          step, model family, engine, world size, workers, scheduler, counters (written last)
    trainer/params.safetensors  trainable parameters, fp32, by name (single process / DDP)
    trainer/optimizer.*         optimizer state: tensors in safetensors, the rest in JSON (single process / DDP)
    trainer/deepspeed/          DeepSpeed engine checkpoint, frozen weights excluded (ZeRO-1/2/3)
    trainer/ema.safetensors     EMA of the trainable parameters (when train.ema_decay is set)
    trainer/rank-R.json         per rank: data-reader states, batches consumed, RNG states

Everything is written into `.tmp-step-NNNNNNN/` and renamed into place by rank 0 once every rank has finished,
so a crash while saving leaves the previous checkpoint as the latest complete one and the partial one ignored.

state.json also records the sha256 of every other file of the checkpoint. Resume verifies them and that every
tensor in its safetensors files is finite (`verify_checkpoint`) before loading anything: `--resume latest` falls
back to the newest good checkpoint with a warning naming what was wrong, and pruning (`keep_checkpoints`) never
deletes the newest good one, so flipped bytes or a run that went non-finite never become the only state left.
"""

from __future__ import annotations

import errno
import json
import os
import random
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml
from safetensors.torch import load_file, save_file

from omnideft.adapters import save_adapter
from omnideft.adapters.fingerprint import base_fingerprint
from omnideft.adapters.folder import first_non_finite
from omnideft.data.format.writer import file_sha256
from omnideft.data.order import rng_state_from_json, rng_state_to_json
from omnideft.errors import UserError
from omnideft.files import TMP_PREFIX, DiskFull, atomic_path, is_disk_full, tree_bytes, write_text_atomic
from omnideft.train.engine import gathered, load_deepspeed_state, load_deepspeed_weights_only
from omnideft.train.faults import NO_FAULTS, Faults

STEP_DIR = re.compile(r"^step-(\d{7})$")
# Recipe keys a resumed run may change: how long, how often, what to measure, where to log, how to launch.
RESUMABLE_CHANGES = ("train.max_steps", "train.checkpoint_every", "train.keep_checkpoints", "train.log_every",
                     "validation.", "retention.", "output.", "launch.config")


def complete_checkpoints(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    dirs = [d for d in root.iterdir() if STEP_DIR.match(d.name) and (d / "trainer" / "state.json").is_file()]
    return sorted(dirs, key=lambda d: d.name)


def find_resume(out_dir: Path, resume: str | None, warn=lambda message: None) -> Path | None:
    """`latest` -> the newest complete checkpoint that verifies (`warn` names each damaged one skipped), None when
    there is no checkpoint at all; a path must be a complete checkpoint that verifies."""
    if resume is None:
        return None
    if resume == "latest":
        found = complete_checkpoints(out_dir / "checkpoints")
        damaged = []
        for checkpoint in reversed(found):
            problem = verify_checkpoint(checkpoint)
            if problem is None:
                return checkpoint
            damaged.append(f"{checkpoint.name}: {problem}")
            warn(f"warning: resume: skipping damaged checkpoint {checkpoint}: {problem}")
        if damaged:
            raise UserError(f"no usable checkpoint in {out_dir / 'checkpoints'} ({'; '.join(damaged)}); "
                            "start the run again with --overwrite instead of --resume")
        return None
    path = Path(resume)
    if not (path / "trainer" / "state.json").is_file():
        raise UserError(f"--resume {resume}: not a complete checkpoint (no trainer/state.json)")
    if (problem := verify_checkpoint(path)) is not None:
        raise UserError(f"--resume {resume}: damaged checkpoint: {problem}")
    return path


def verify_checkpoint(checkpoint: Path) -> str | None:
    """None when the checkpoint is intact, else what is wrong with it: a file whose sha256 differs from the one
    recorded at commit, a missing or unreadable file, a non-finite tensor. Checkpoints written before the sha256
    record existed are checked for readable, finite tensors only."""
    state_path = checkpoint / "trainer" / "state.json"
    try:
        state = json.loads(state_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return f"cannot read {state_path.relative_to(checkpoint)}: {_first_line(exc)}"
    if not isinstance(state, dict) or not isinstance(state.get("step"), int):
        return "trainer/state.json is not a checkpoint state"
    for name, digest in (state.get("files") or {}).items():
        path = checkpoint / name
        if not path.is_file():
            return f"{name} is missing"
        try:
            if file_sha256(path) != digest:
                return f"{name} is damaged (sha256 differs from the one recorded when it was saved)"
        except OSError as exc:
            return f"cannot read {name}: {_first_line(exc)}"
    for path in sorted(checkpoint.rglob("*.safetensors")):
        try:
            tensors = load_file(str(path))
        except Exception as exc:  # truncated or foreign file: safetensors raises its own error types
            return f"cannot read {path.relative_to(checkpoint)}: {_first_line(exc)}"
        if (bad := first_non_finite(tensors)) is not None:
            return f"{path.relative_to(checkpoint)}: tensor {bad} is not finite"
    for path in sorted(checkpoint.rglob("*.pt")):  # DeepSpeed's state: pickles, read weights-only (nothing runs)
        try:
            load_deepspeed_state(path, map_location="cpu")
        except UserError as exc:
            return str(exc)
        except Exception as exc:  # truncated or foreign file
            return f"cannot read {path.relative_to(checkpoint)}: {_first_line(exc)}"
    return None


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0]


def _file_digests(folder: Path) -> dict:
    """sha256 of every file under `folder` except trainer/state.json (which holds them), by relative path."""
    return {str(p.relative_to(folder)): file_sha256(p) for p in sorted(folder.rglob("*"))
            if p.is_file() and p.relative_to(folder) != Path("trainer", "state.json")}


def staging_dir(root: Path, step: int) -> Path:
    return root / f"{TMP_PREFIX}step-{step:07d}"


def commit(root: Path, step: int, keep: int, state: dict) -> Path:
    """Rank 0, after every rank wrote its part: record every file's sha256 in state.json (written last: it marks
    the checkpoint complete), publish the staged checkpoint, then prune old ones."""
    staged = staging_dir(root, step)
    write_text_atomic(staged / "trainer" / "state.json",
                      json.dumps({**state, "files": _file_digests(staged)}, indent=2) + "\n")
    final = root / f"step-{step:07d}"
    if final.exists():
        shutil.rmtree(final)
    staged.rename(final)
    for stale in root.glob(f"{TMP_PREFIX}step-*"):
        shutil.rmtree(stale, ignore_errors=True)
    if keep > 0:
        prune(root, keep)
    return final


def prune(root: Path, keep: int) -> None:
    """Delete all but the `keep` newest checkpoints, never the newest one that verifies: when the newest ones are
    damaged or non-finite, the last good state stays on disk to resume from."""
    found = complete_checkpoints(root)
    good = next((c for c in reversed(found) if verify_checkpoint(c) is None), None)
    for old in found[:-keep]:
        if old != good:
            shutil.rmtree(old, ignore_errors=True)


def check_compatible(checkpoint: Path, recipe: dict, state_now: dict, family: str | None = None) -> dict:
    """The checkpoint's trainer state; refuses a checkpoint of another recipe, model family, engine or process
    layout."""
    state = read_json(checkpoint / "trainer" / "state.json")
    if family is not None and state.get("family", family) != family:  # checkpoints from before it was recorded pass
        raise UserError(f"checkpoint {checkpoint} was made for model family {state['family']}, this run's base is "
                        f"{family}; start a new output.dir")
    try:
        saved_recipe = yaml.safe_load((checkpoint / "recipe.yaml").read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise UserError(f"checkpoint {checkpoint}: cannot read recipe.yaml: {_first_line(exc)}") from None
    if not isinstance(saved_recipe, dict):
        raise UserError(f"checkpoint {checkpoint}: recipe.yaml is not a recipe")
    saved_recipe.setdefault("model", {}).setdefault("family", "auto")  # checkpoints from before model.family
    diffs = [k for k in _flat_diff(saved_recipe, recipe) if not k.startswith(RESUMABLE_CHANGES)]
    if diffs:
        raise UserError(f"checkpoint {checkpoint} was made by a different recipe: {', '.join(diffs)} differ "
                        "(start a new output.dir, or resume with the same values)")
    for key in ("engine", "world_size", "num_workers"):
        if state.get(key) != state_now[key]:
            raise UserError(f"checkpoint {checkpoint} was made with {key}={state.get(key)}, this run has "
                            f"{key}={state_now[key]}; resume with the same launch layout")
    return state


def check_same_base(checkpoint: Path, model) -> None:
    """The checkpoint's adapter was trained on a base of this shape (same test as loading an adapter)."""
    base = read_json(checkpoint / "omnideft.json").get("base", {})
    have = base_fingerprint(model)
    if base.get("fingerprint") not in (None, have):
        raise UserError(f"checkpoint {checkpoint} belongs to another base model ({base.get('name')}, "
                        f"{base.get('fingerprint')}); this model is {have}")


def read_json(path: Path) -> dict:
    """A checkpoint's JSON file; unreadable or missing is one line naming it."""
    try:
        value = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot read checkpoint file {path}: {_first_line(exc)}") from None
    if not isinstance(value, dict):
        raise UserError(f"checkpoint file {path} is not a JSON object")
    return value


def _flat_diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _flat_diff(va, vb, f"{prefix}{k}.")
        elif va != vb:
            out.append(f"{prefix}{k}")
    return out


# --- tensors and RNG ------------------------------------------------------------------------------------------

def save_tensors(tensors: dict, path: Path) -> None:
    with atomic_path(path) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp))


def load_tensors(path: Path) -> dict:
    try:
        return load_file(str(path))
    except Exception as exc:  # truncated or foreign file
        raise UserError(f"cannot read {path}: {str(exc).splitlines()[0]}") from None


def save_optimizer(optimizer: torch.optim.Optimizer, folder: Path) -> None:
    """torch optimizer state without pickles: tensors -> safetensors, everything else -> JSON."""
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for idx, entry in sd["state"].items():
        for name, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"{idx}.{name}"] = value
            else:
                scalars[f"{idx}.{name}"] = value
    save_tensors(tensors, folder / "optimizer.safetensors")
    write_text_atomic(folder / "optimizer.json", json.dumps({"param_groups": sd["param_groups"],
                                                             "scalars": scalars}) + "\n")


def load_optimizer(optimizer: torch.optim.Optimizer, folder: Path) -> None:
    meta = read_json(folder / "optimizer.json")
    state: dict = {}
    for key, value in [*load_tensors(folder / "optimizer.safetensors").items(), *meta["scalars"].items()]:
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def rng_state(noise: torch.Generator) -> dict:
    out = {"python": rng_state_to_json(random.getstate()), "torch": torch.get_rng_state().tolist(),
           "noise": noise.get_state().tolist(), "numpy": rng_state_to_json(np.random.get_state())}
    if torch.cuda.is_available():
        out["cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    return out


def restore_rng(state: dict, noise: torch.Generator) -> None:
    random.setstate(rng_state_from_json(state["python"]))
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    noise.set_state(torch.tensor(state["noise"], dtype=torch.uint8))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in state["cuda"]])


# --- save / restore a live run ----------------------------------------------------------------------------------

@dataclass
class LiveRun:
    """What a checkpoint captures, by reference to the training loop's objects."""
    engine: object  # train.engine.Engine
    model: torch.nn.Module  # as prepared by accelerate (DDP wrapper or DeepSpeed engine)
    optimizer: object
    scheduler: object
    noise: torch.Generator
    trainable: dict  # name -> Parameter of the unwrapped (adapted) model
    base_name: str
    family: str  # the base's model family (families/registry.py): recorded in the adapter and in state.json
    recipe: dict
    layout: dict  # engine, world_size, num_workers: must match on resume
    ema: object = None  # train.ema.AdapterEMA on the main process
    base_weights: list | None = None  # the base's weights fingerprint, taken before the engine partitioned it
    reader_states: dict = field(default_factory=dict)
    consumed: int = 0

    @property
    def accelerator(self):
        return self.engine.accelerator

    @property
    def adapted(self):
        """The adapted transformer without the engine's wrapper (a PEFT model, or an own injection's wrapper)."""
        return self.accelerator.unwrap_model(self.model)

    def took(self, reader_state) -> None:
        """Count a consumed batch and keep its reader's state (data.loader.ReaderState): what resume restores."""
        self.reader_states[reader_state.reader] = reader_state.state
        self.consumed += 1


def adapter_state(run: LiveRun) -> dict:
    """Full fp32 CPU copies of the trainable parameters on every rank (ZeRO-3 gathers them: all ranks call)."""
    with gathered(list(run.trainable.values()), run.engine):
        return {n: p.detach().float().cpu().clone() for n, p in run.trainable.items()}


def save_adapter_folder(run: LiveRun, folder: Path, step: int, state: dict) -> None:
    """Main process only: the adapter as contract 2 (PEFT files + omnideft.json + recipe.yaml), EMA beside it."""
    # replace: the run folder is the trainer's own (its lock, and --overwrite / --resume decided what it may hold)
    save_adapter(run.adapted, folder, base_name=run.base_name, recipe=run.recipe, step=step, state_dict=state,
                 base_weights=run.base_weights, replace=True, family=run.family)
    write_text_atomic(folder / "recipe.yaml", yaml.safe_dump(run.recipe, sort_keys=False))
    if run.ema is not None:
        save_adapter(run.adapted, folder / "ema", base_name=run.base_name, recipe=run.recipe, step=step,
                     state_dict=run.ema.state_dict(), base_weights=run.base_weights, family=run.family)


def save_checkpoint(run: LiveRun, root: Path, step: int, keep: int, faults: Faults = NO_FAULTS) -> Path:
    """All ranks call. Stage, write every part, then publish atomically (see module docstring)."""
    acc = run.accelerator
    main = acc.is_main_process
    tmp = staging_dir(root, step)
    state = adapter_state(run)
    acc.wait_for_everyone()
    try:
        _stage(run, tmp, step, state, faults)
    except (OSError, UserError) as exc:  # a full disk above all: no staged leftovers, older checkpoints untouched
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, DiskFull) or is_disk_full(exc):
            previous = complete_checkpoints(root)  # a checkpoint needs about as much as the previous one
            needed = tree_bytes(previous[-1]) if previous else getattr(exc, "needed", 0)
            reason = exc.reason if isinstance(exc, DiskFull) else exc.strerror or str(exc)
            raise DiskFull(root / f"step-{step:07d}", needed, reason) from None
        raise
    acc.wait_for_everyone()
    final = root / f"step-{step:07d}"
    if main:
        final = commit(root, step, keep, {"step": step, "family": run.family, **run.layout,
                                          "scheduler": _scheduler_state(run.scheduler)})
    acc.wait_for_everyone()
    return final


def _stage(run: LiveRun, tmp: Path, step: int, state: dict, faults: Faults) -> None:
    """Every rank writes its part of the checkpoint into the staging folder `tmp`."""
    acc, main = run.accelerator, run.accelerator.is_main_process
    if main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.parent.mkdir(parents=True, exist_ok=True)
        save_adapter_folder(run, tmp, step, state)
        (tmp / "trainer").mkdir()
    acc.wait_for_everyone()
    trainer = tmp / "trainer"
    if faults.fire("disk-full-in-checkpoint", step):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(trainer / "params.safetensors"))
    if run.engine.deepspeed:
        run.model.save_checkpoint(str(trainer / "deepspeed"), tag="state", exclude_frozen_parameters=True)
    elif main:
        save_tensors(state, trainer / "params.safetensors")
        save_optimizer(run.optimizer.optimizer if hasattr(run.optimizer, "optimizer") else run.optimizer, trainer)
    if main and run.ema is not None:
        save_tensors(run.ema.state_dict(), trainer / "ema.safetensors")
    write_text_atomic(trainer / f"rank-{acc.process_index}.json", json.dumps({
        "readers": run.reader_states, "consumed": run.consumed, "rng": rng_state(run.noise)}) + "\n")
    faults.fire("kill-in-checkpoint", step)


def restore_checkpoint(run: LiveRun, checkpoint: Path) -> tuple[int, dict]:
    """Load a checkpoint into a freshly prepared run; returns (step, this rank's data state)."""
    acc = run.accelerator
    state = read_json(checkpoint / "trainer" / "state.json")
    trainer = checkpoint / "trainer"
    if run.engine.deepspeed:
        # Frozen weights were excluded on save; non-strict module loading keeps the base from the model files.
        load_deepspeed_weights_only(run.model)  # verified above too; this is the load that counts
        path, _ = run.model.load_checkpoint(str(trainer / "deepspeed"), tag="state", load_module_strict=False)
        if path is None:
            raise UserError(f"checkpoint {checkpoint}: DeepSpeed could not load {trainer / 'deepspeed'}")
    else:
        params = load_tensors(trainer / "params.safetensors")
        missing, unexpected = set(run.trainable) - set(params), set(params) - set(run.trainable)
        if missing:
            raise UserError(f"checkpoint {checkpoint} lacks adapter parameters such as {sorted(missing)[0]}")
        if unexpected:
            raise UserError(f"checkpoint {checkpoint} holds parameters this run does not train, such as "
                            f"{sorted(unexpected)[0]}")
        with torch.no_grad():
            for n, p in run.trainable.items():
                p.copy_(params[n])
        load_optimizer(run.optimizer.optimizer if hasattr(run.optimizer, "optimizer") else run.optimizer, trainer)
    _load_scheduler_state(run.scheduler, state["scheduler"])
    if run.ema is not None:
        if not (trainer / "ema.safetensors").is_file():
            raise UserError(f"checkpoint {checkpoint} has no EMA state but train.ema_decay is set")
        run.ema.load_state_dict(load_tensors(trainer / "ema.safetensors"))
    rank_file = trainer / f"rank-{acc.process_index}.json"
    mine = read_json(rank_file)
    restore_rng(mine["rng"], run.noise)
    run.reader_states = {int(k): v for k, v in mine["readers"].items()}
    run.consumed = mine["consumed"]
    return state["step"], {"readers": run.reader_states, "consumed": run.consumed}


def _scheduler_state(scheduler) -> dict:
    inner = getattr(scheduler, "scheduler", scheduler)
    return {k: v for k, v in inner.state_dict().items() if k != "lr_lambdas"}


def _load_scheduler_state(scheduler, state: dict) -> None:
    inner = getattr(scheduler, "scheduler", scheduler)
    inner.load_state_dict({**inner.state_dict(), **state})
