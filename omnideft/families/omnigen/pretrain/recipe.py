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
    hidden_size: int = option(128, "transformer width", bounds=">= 1")
    num_layers: int = option(4, "transformer blocks", bounds=">= 1")
    num_heads: int = option(4, "attention heads (and key/value heads)", bounds=">= 1")
    intermediate_size: int = option(512, "MLP width", bounds=">= 1")
    time_step_dim: int = option(128, "sinusoidal timestep features", bounds=">= 1")
    seed: int = option(0, "seed of the random initial weights")


@dataclass
class VaeSection:
    channels: int = option(8, "channels of each of the VAE's four 2x down/up blocks (an 8x VAE)", bounds=">= 1")
    latent_channels: int = option(8, "latent channels (the transformer's in_channels follow)", bounds=">= 1")
    fit_steps: int = option(2000, "steps fitting the VAE to shape-world images before the transformer trains",
                            bounds=">= 0")
    fit_batch: int = option(16, "images per VAE step", bounds=">= 1")
    fit_lr: float = option(3e-3, "VAE learning rate (Adam)", bounds="> 0")
    fit_min_lr_ratio: float = option(0.05, "final VAE learning rate as a fraction of fit_lr, reached by cosine decay "
                                     "(1 = constant)", bounds="[0, 1]")
    fit_images: int = option(768, "distinct images the VAE is fitted on", bounds=">= 1")


@dataclass
class TasksSection:
    tasks: list = option(task_names("A"), "shape-world tasks trained (omnideft/shapes/tasks.py), drawn uniformly")
    image_size: int = option(64, "side of every image, in pixels (a multiple of 16)", bounds=">= 16", multiple=16)
    max_examples: int = option(2, "in-context example pairs per sample: uniform in [the task's minimum, this]",
                               bounds=">= 0")
    uncond_prob: float = option(0.1, "instruction and images dropped (half '<cfg>', half the default negative "
                            "prompt): the rows text guidance subtracts", bounds="[0, 1)")
    image_only_prob: float = option(0.05, "instruction dropped, images kept: the row image guidance subtracts",
                                    bounds="[0, 1)")


@dataclass
class PretrainSection:
    steps: int = option(16000, "optimizer steps", bounds=">= 1")
    batch_size: int = option(16, "samples per step", bounds=">= 1")
    lr: float = option(2e-3, "peak learning rate (AdamW)", bounds="> 0")
    warmup_steps: int = option(200, "linear warm-up steps, then cosine decay to min_lr_ratio x lr", bounds=">= 0")
    min_lr_ratio: float = option(0.1, "final learning rate as a fraction of lr", bounds="[0, 1]")
    weight_decay: float = option(0.0, "AdamW weight decay", bounds=">= 0")
    betas: list = option([0.9, 0.99], "AdamW betas", bounds="[0, 1)")
    grad_clip: float = option(1.0, "max gradient norm", bounds=">= 0")
    seed: int = option(0, "seed of the task stream, noise and timesteps")
    threads: int = option(0, "torch CPU threads (0 = torch's default); the float results can depend on it",
                          bounds=">= 0")
    log_every: int = option(50, "print the mean loss every N steps when the progress bar is off", bounds=">= 1")
    checkpoint_every: int = option(500, "write OUT/checkpoint/ every N steps (and on SIGTERM / Ctrl-C), for "
                                   "`omnideft pretrain ... --resume`; 0 = only on a signal", bounds=">= 0")


@dataclass
class HeldOutSection:
    queries: int = option(16, "held-out queries per task for the card's task metrics (0 = skip)", bounds=">= 0")
    sampler_steps: int = option(20, "sampler steps per query", bounds=">= 1")
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
