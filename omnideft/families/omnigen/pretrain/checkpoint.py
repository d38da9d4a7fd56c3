"""Pretraining checkpoints: everything the loop's next step depends on, so a resumed run is bit for bit the run that
was not interrupted.

`OUT/checkpoint/` holds state.safetensors (the transformer, the fitted VAE, AdamW's moments, the noise generator's
and torch's global RNG states) and state.json (step, losses so far, the recipe, the learning-rate schedule's
position, the task stream's numpy RNG state, AdamW's param groups, the VAE's scaling factor, elapsed seconds). It is
written through a temporary folder renamed into place, so an interruption leaves the previous checkpoint whole.
The finished model replaces the whole of OUT, checkpoint included.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from omnideft.errors import UserError
from omnideft.files import atomic_path

FORMAT = "omnideft.pretrain-checkpoint/1"
CHECKPOINT = "checkpoint"
# Recipe keys that do not change a single bit of the result: a resumed run may differ in them.
FREE_KEYS = {"heldout", "train.log_every", "train.checkpoint_every"}


@dataclass
class LoopState:
    """What the loop carries from step to step besides the modules' and optimizer's tensors."""

    step: int
    losses: list[float]
    vae_mse: float
    seconds_vae: float
    seconds_train: float  # training time before this process (its own is added at the end)
    resumed_at: list[int]


def checkpoint_dir(out: Path) -> Path:
    return Path(out) / CHECKPOINT


def save_checkpoint(out: Path, writer: str, recipe: dict, state: LoopState, transformer, vae, optimizer, schedule,
                    stream_rng: np.random.Generator, noise: torch.Generator) -> Path:
    from safetensors.torch import save_file

    tensors = {f"transformer.{k}": v for k, v in transformer.state_dict().items()}
    tensors |= {f"vae.{k}": v for k, v in vae.state_dict().items()}
    opt = optimizer.state_dict()
    for index, slots in opt["state"].items():
        tensors |= {f"optimizer.{index}.{name}": value for name, value in slots.items()}
    tensors["rng.noise"] = noise.get_state()
    tensors["rng.torch"] = torch.get_rng_state()
    record = {
        "format": FORMAT, "recipe": recipe, "step": state.step, "losses": state.losses, "vae_mse": state.vae_mse,
        "vae_scaling_factor": vae.config.scaling_factor, "seconds_vae": state.seconds_vae,
        "seconds_train": state.seconds_train, "resumed_at": state.resumed_at,
        "optimizer_param_groups": opt["param_groups"], "schedule": schedule.state_dict(),
        "stream_rng": stream_rng.bit_generator.state,
    }
    final = checkpoint_dir(out)
    with atomic_path(final, writer=writer) as tmp:
        tmp.mkdir()
        # clones: safetensors refuses tensors that share memory; the copies are loaded back into place
        save_file({k: v.detach().clone().contiguous() for k, v in tensors.items()}, tmp / "state.safetensors")
        (tmp / "state.json").write_text(json.dumps(record) + "\n")
    return final


def read_checkpoint(out: Path) -> tuple[dict, dict] | None:
    """(state.json's record, the tensors) of OUT's checkpoint, or None when there is none."""
    from safetensors.torch import load_file

    folder = checkpoint_dir(out)
    if not (folder / "state.json").is_file():
        return None
    try:
        record = json.loads((folder / "state.json").read_text())
        tensors = load_file(folder / "state.safetensors")
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read the pretraining checkpoint {folder}: {exc}") from None
    if record.get("format") != FORMAT:
        raise UserError(f"{folder} is not a pretraining checkpoint of this version (format {record.get('format')!r}, "
                        f"expected {FORMAT!r})")
    return record, tensors


def check_same_recipe(folder: Path, saved: dict, recipe: dict) -> None:
    """A resumed run must train what the interrupted one trained: one line naming the keys that differ."""
    differ = [key for key, old, new in _leaves(saved, recipe) if old != new and not _free(key)]
    if differ:
        raise UserError(f"the recipe differs from the one the checkpoint {folder} was trained with, in "
                        f"{', '.join(differ)}; resume with the same recipe and overrides, or name another --out")


def restore(record: dict, tensors: dict, transformer, vae, optimizer, schedule, stream_rng: np.random.Generator,
            noise: torch.Generator) -> LoopState:
    """Load the checkpoint into the freshly built objects; returns the loop's state at the checkpoint's step."""
    transformer.load_state_dict(_part(tensors, "transformer."))
    vae.load_state_dict(_part(tensors, "vae."))
    vae.register_to_config(scaling_factor=record["vae_scaling_factor"])
    slots: dict[int, dict] = {}
    for key, value in _part(tensors, "optimizer.").items():
        index, name = key.split(".", 1)
        slots.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": slots, "param_groups": record["optimizer_param_groups"]})
    schedule.load_state_dict(record["schedule"])
    stream_rng.bit_generator.state = record["stream_rng"]
    noise.set_state(tensors["rng.noise"])
    torch.set_rng_state(tensors["rng.torch"])
    return LoopState(record["step"], list(record["losses"]), record["vae_mse"], record["seconds_vae"],
                     record["seconds_train"], [*record["resumed_at"], record["step"]])


def _part(tensors: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def _leaves(old, new, key: str = ""):
    if isinstance(old, dict) and isinstance(new, dict):
        for k in sorted(set(old) | set(new)):
            yield from _leaves(old.get(k), new.get(k), f"{key}.{k}" if key else k)
    else:
        yield key, old, new


def _free(key: str) -> bool:
    return any(key == free or key.startswith(free + ".") for free in FREE_KEYS)
