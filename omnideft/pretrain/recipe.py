"""The pretraining recipe (recipes/small_base.yaml): model size, VAE fit, task mixture, optimiser, held-out check.

Same rules as the training recipe (omnideft/train/recipe.py): every key has a default and a help line, unknown keys
and wrong types fail before anything runs, `section.key=value` overrides on the command line.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from omnideft.shapes import task_names
from omnideft.train.recipe import _f


@dataclass
class SmallModelSection:
    hidden_size: int = _f(128, "transformer width")
    num_layers: int = _f(4, "transformer blocks")
    num_heads: int = _f(4, "attention heads (and key/value heads)")
    intermediate_size: int = _f(512, "MLP width")
    time_step_dim: int = _f(128, "sinusoidal timestep features")
    seed: int = _f(0, "seed of the random initial weights")


@dataclass
class VaeSection:
    channels: int = _f(8, "channels of each of the VAE's four 2x down/up blocks (an 8x VAE, 4 latent channels)")
    fit_steps: int = _f(1000, "steps fitting the VAE to shape-world images before the transformer trains")
    fit_batch: int = _f(16, "images per VAE step")
    fit_lr: float = _f(3e-3, "VAE learning rate (Adam)")
    fit_images: int = _f(768, "distinct images the VAE is fitted on")


@dataclass
class TasksSection:
    tasks: list = _f(task_names("A"), "shape-world tasks trained (omnideft/shapes/tasks.py), drawn uniformly")
    image_size: int = _f(64, "side of every image, in pixels (a multiple of 16)")
    max_examples: int = _f(2, "in-context example pairs per sample: uniform in [the task's minimum, this]")
    uncond_prob: float = _f(0.1, "instruction and images dropped (half '<cfg>', half the default negative "
                            "prompt): the rows text guidance subtracts")
    image_only_prob: float = _f(0.05, "instruction dropped, images kept: the row image guidance subtracts")


@dataclass
class PretrainSection:
    steps: int = _f(6000, "optimizer steps")
    batch_size: int = _f(16, "samples per step")
    lr: float = _f(5e-4, "peak learning rate (AdamW)")
    warmup_steps: int = _f(200, "linear warm-up steps, then cosine decay to min_lr_ratio x lr")
    min_lr_ratio: float = _f(0.1, "final learning rate as a fraction of lr")
    weight_decay: float = _f(0.0, "AdamW weight decay")
    betas: list = _f([0.9, 0.99], "AdamW betas")
    grad_clip: float = _f(1.0, "max gradient norm")
    seed: int = _f(0, "seed of the task stream, noise and timesteps")
    threads: int = _f(0, "torch CPU threads (0 = torch's default); the float results can depend on it")
    log_every: int = _f(50, "print the mean loss every N steps when the progress bar is off")


@dataclass
class HeldOutSection:
    queries: int = _f(16, "held-out queries per task for the card's task metrics (0 = skip)")
    sampler_steps: int = _f(20, "sampler steps per query")
    guidance: float = _f(2.5, "text guidance")
    image_guidance: float = _f(1.6, "image guidance")
    seed: int = _f(1000, "seed of the held-out queries (disjoint from the training stream)")


@dataclass
class PretrainRecipe:
    model: SmallModelSection = field(default_factory=SmallModelSection)
    vae: VaeSection = field(default_factory=VaeSection)
    data: TasksSection = field(default_factory=TasksSection)
    train: PretrainSection = field(default_factory=PretrainSection)
    heldout: HeldOutSection = field(default_factory=HeldOutSection)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
