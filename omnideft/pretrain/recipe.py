"""The pretraining recipe (recipes/pretrain/small_base.yaml): model size, VAE fit, task mixture, optimiser,
held-out check.

Same rules as the training recipe (omnideft/options.py): every key has a default and a help line, unknown keys
and wrong types fail before anything runs, `section.key=value` overrides on the command line.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from omnideft.options import load_sections, option
from omnideft.shapes import task_names


@dataclass
class SmallModelSection:
    hidden_size: int = option(128, "transformer width")
    num_layers: int = option(4, "transformer blocks")
    num_heads: int = option(4, "attention heads (and key/value heads)")
    intermediate_size: int = option(512, "MLP width")
    time_step_dim: int = option(128, "sinusoidal timestep features")
    seed: int = option(0, "seed of the random initial weights")


@dataclass
class VaeSection:
    channels: int = option(8, "channels of each of the VAE's four 2x down/up blocks (an 8x VAE, 4 latent channels)")
    fit_steps: int = option(1000, "steps fitting the VAE to shape-world images before the transformer trains")
    fit_batch: int = option(16, "images per VAE step")
    fit_lr: float = option(3e-3, "VAE learning rate (Adam)")
    fit_images: int = option(768, "distinct images the VAE is fitted on")


@dataclass
class TasksSection:
    tasks: list = option(task_names("A"), "shape-world tasks trained (omnideft/shapes/tasks.py), drawn uniformly")
    image_size: int = option(64, "side of every image, in pixels (a multiple of 16)")
    max_examples: int = option(2, "in-context example pairs per sample: uniform in [the task's minimum, this]")
    uncond_prob: float = option(0.1, "instruction and images dropped (half '<cfg>', half the default negative "
                            "prompt): the rows text guidance subtracts")
    image_only_prob: float = option(0.05, "instruction dropped, images kept: the row image guidance subtracts")


@dataclass
class PretrainSection:
    steps: int = option(8000, "optimizer steps")
    batch_size: int = option(16, "samples per step")
    lr: float = option(2e-3, "peak learning rate (AdamW)")
    warmup_steps: int = option(200, "linear warm-up steps, then cosine decay to min_lr_ratio x lr")
    min_lr_ratio: float = option(0.1, "final learning rate as a fraction of lr")
    weight_decay: float = option(0.0, "AdamW weight decay")
    betas: list = option([0.9, 0.99], "AdamW betas")
    grad_clip: float = option(1.0, "max gradient norm")
    seed: int = option(0, "seed of the task stream, noise and timesteps")
    threads: int = option(0, "torch CPU threads (0 = torch's default); the float results can depend on it")
    log_every: int = option(50, "print the mean loss every N steps when the progress bar is off")


@dataclass
class HeldOutSection:
    queries: int = option(16, "held-out queries per task for the card's task metrics (0 = skip)")
    sampler_steps: int = option(20, "sampler steps per query")
    guidance: float = option(2.5, "text guidance")
    image_guidance: float = option(1.6, "image guidance")
    seed: int = option(1000, "seed of the held-out queries (disjoint from the training stream)")


@dataclass
class PretrainRecipe:
    model: SmallModelSection = field(default_factory=SmallModelSection)
    vae: VaeSection = field(default_factory=VaeSection)
    data: TasksSection = field(default_factory=TasksSection)
    train: PretrainSection = field(default_factory=PretrainSection)
    heldout: HeldOutSection = field(default_factory=HeldOutSection)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def load_pretrain_recipe(path, overrides=()) -> PretrainRecipe:
    return load_sections(path, overrides, PretrainRecipe)
