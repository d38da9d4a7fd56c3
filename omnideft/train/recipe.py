"""Contract 3 — the recipe: one YAML file, sections model/adapter/camera/data/train/validation/retention/launch/
output.

The `adapter` and `camera` sections are the rooms' own specs (adapters.spec.AdapterSpec, camera.spec.CameraSpec);
the other sections are defined here. Every key is an `options.option`: one default, a line of help (`omnideft train
--help-recipe` prints them) and its allowed values. Unknown keys and wrong types fail before any model loads, naming
the key. CLI overrides are `key.sub=value` (value parsed as YAML).
"""

from __future__ import annotations

import dataclasses
import glob
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path

from omnideft.adapters.spec import AdapterSpec
from omnideft.camera.spec import CameraSpec
from omnideft.families.registry import AUTO, family_names
from omnideft.options import load_sections, option, options_help


@dataclass
class ModelSection:
    name: str = option("Shitao/OmniGen-v1-diffusers", "hub id, local diffusers folder, 'tiny' (random toy model) or "
                       "'small' (the pretrained toy model shipped with omnideft, docs/models.md)")
    revision: typing.Optional[str] = option(None, "hub revision (branch, tag or commit)")
    seed: int = option(0, "seed for the 'tiny' preset's random weights")
    quantize: typing.Optional[str] = option(None, "storage of the frozen base under the fp32 adapter: null = as loaded "
                                            "(fp32); bf16; int8/fp8 weight-only (optimum-quanto, CPU or GPU); nf4 "
                                            "(bitsandbytes, CUDA only) -- docs/memory.md",
                                            ("bf16", "int8", "fp8", "nf4"))
    family: str = option("auto", "the model family (omnideft/families/); auto = read from the model folder, the "
                         "default family for hub ids and presets; 'tiny' with a family is that family's tiny preset",
                         lambda: (AUTO, *family_names()))


@dataclass
class DataSection:
    shards: list = option([], "list of shard globs (str) or {path, weight} mixing entries; a path may be a URL "
                          "(http(s)://, s3://, gs://, pipe:) of a shard folder with manifest.json or a brace pattern, "
                          "streamed (docs/memory.md)")
    max_image_size: int = option(1024, "long-side cap for input and output images (multiple of 16)",
                                 bounds=">= 16", multiple=16)
    condition_dropout: float = option(0.01, "probability that instruction+images become '<cfg>' (for CFG)",
                                      bounds="[0, 1)")
    latents: typing.Optional[str] = option(None, "latent cache folder written by `omnideft cache-latents`: the trainer "
                                           "samples the cached VAE posteriors instead of encoding (same losses, no VAE "
                                           "on the GPU); null = encode every step")
    num_workers: int = option(-1, "background processes decoding and batching samples per training process (0 = in the "
                          "training process; -1 = auto: 0 without CUDA, where they would compete with the training "
                          "threads for the same cores, else 2); part of the data order, so a resumed run keeps it",
                              bounds=">= -1")


@dataclass
class TrainSection:
    max_steps: int = option(1000, "optimizer steps", bounds=">= 1")
    batch_size: int = option(1, "samples per process per step", bounds=">= 1")
    lr: float = option(1e-4, "learning rate (of R for DEFT)", bounds="> 0")
    weight_decay: float = option(0.0, "AdamW weight decay", bounds=">= 0")
    betas: list = option([0.9, 0.99], "AdamW betas", bounds="[0, 1)")
    warmup_steps: int = option(0, "linear warm-up steps, then constant", bounds=">= 0")
    grad_clip: float = option(1.0, "max gradient norm (0 = off)", bounds=">= 0")
    mixed_precision: str = option("no", "autocast dtype for the transformer", ("no", "bf16", "fp16"))
    gradient_checkpointing: bool = option(False, "recompute block activations in backward")
    memory: typing.Optional[str] = option(None, "memory preset (docs/memory.md): switches checkpointing, base "
                                          "quantisation, VAE placement and image size to fit a GPU of that size; auto "
                                          "= the cheapest that fits this GPU (`omnideft plan` shows the numbers); "
                                          "null = off", ("auto", "80gb", "48gb", "24gb", "16gb", "12gb"))
    seed: int = option(0, "seed for data order, noise and timesteps")
    checkpoint_every: int = option(500, "save a resumable checkpoint (adapter + optimizer, RNG, data position) every N "
                               "steps and at the last step (0 = only the final adapter)", bounds=">= 0")
    keep_checkpoints: int = option(3, "how many step checkpoints stay on disk (older ones are deleted; 0 = keep all)",
                                   bounds=">= 0")
    ema_decay: typing.Optional[float] = option(None, "EMA of the adapter weights (e.g. 0.999), saved as adapter/ema/; "
                                           "null = off", bounds="(0, 1)")
    max_bad_steps: int = option(5, "a non-finite loss or gradient skips the step; stop after this many in a row",
                                bounds=">= 1")
    log_every: int = option(10, "print a loss line every N steps when the progress bar is off (--no-progress)",
                            bounds=">= 0")


@dataclass
class ValidationSection:
    every: int = option(0, "render validation prompts every N steps (0 = off); also rendered after the last step",
                        bounds=">= 0")
    prompts: list = option([], "list of {prompt, images: [paths], height, width} rendered at validation")
    steps: int = option(20, "sampler steps at validation", bounds=">= 1")
    guidance: typing.Optional[float] = option(None, "text CFG scale at validation (null = the model family's own)",
                                              bounds=">= 0")
    image_guidance: typing.Optional[float] = option(None, "image CFG scale at validation (null = the family's own)",
                                                    bounds=">= 0")
    seed: int = option(0, "sampler seed at validation (fixed, so images are comparable across steps)")


@dataclass
class RetentionSection:
    enabled: bool = option(False, "the forgetting gauge (docs/training.md): at every validation the adapted model "
                           "answers probes the base handles; logs PEFT's DINOv2 drift from the base's answers and task "
                           "scores where the probes have targets")
    probes: typing.Optional[str] = option(None, "a probe file (.yaml list or .jsonl lines of {prompt, images, height, "
                                          "width, target, colour, kind}) or a shipped set: shapes (the shape world's "
                                          "family A, with targets) or generic; null = the base's own (shapes for "
                                          "the small preset, else generic)")
    seeds: list = option([0], "sampler seeds: every probe is answered once per seed, by the base and at every "
                         "validation", bounds=">= 0")
    dinov2_model: typing.Optional[str] = option("facebook/dinov2-small", "DINOv2 model for the drift: a local folder "
                                                "or a cached hub id (as `omnideft eval --dinov2-model`); null = no "
                                                "drift, task scores only (probes with targets)")
    max_drift: typing.Optional[float] = option(None, "stop the run when a validation's drift exceeds this; the "
                                               "result is the adapter of the last validation within it (null = "
                                               "no limit)", bounds="(0, 1]")


@dataclass
class LaunchSection:
    config: typing.Optional[str] = option(None, "accelerate config YAML; `omnideft train` then re-launches itself "
                                      "with `accelerate launch --config_file` (null = this process)")
    deepspeed: typing.Optional[str] = option(None, "DeepSpeed JSON config (ZeRO stage etc.) used when this process was "
                                         "started by torchrun / srun / deepspeed; null = DDP or single process")


@dataclass
class OutputSection:
    dir: str = option("runs/omnideft", "output directory: adapter/, checkpoints/, logs, resolved recipe")
    tensorboard: bool = option(True, "write TensorBoard scalars and validation grids to <dir>/tensorboard")
    wandb_project: typing.Optional[str] = option(None, "also log to this Weights & Biases project (needs `wandb`)")


@dataclass
class Recipe:
    model: ModelSection = field(default_factory=ModelSection)
    adapter: AdapterSpec = field(default_factory=AdapterSpec)
    camera: CameraSpec = field(default_factory=CameraSpec)
    data: DataSection = field(default_factory=DataSection)
    train: TrainSection = field(default_factory=TrainSection)
    validation: ValidationSection = field(default_factory=ValidationSection)
    retention: RetentionSection = field(default_factory=RetentionSection)
    launch: LaunchSection = field(default_factory=LaunchSection)
    output: OutputSection = field(default_factory=OutputSection)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def load_recipe(path: str | Path | None, overrides: list[str] = ()) -> Recipe:
    """The recipe YAML at `path` (None: defaults only) with `section.key=value` overrides applied."""
    return load_sections(path, overrides, Recipe, prepare=_paths_relative_to_recipe)


def recipe_help() -> str:
    return options_help(Recipe)


def _paths_relative_to_recipe(raw: dict, recipe_dir: Path) -> None:
    """Relative paths written in a recipe file (data.shards, validation.prompts[].images, retention.probes and
    retention.dinov2_model) that match nothing from the current directory are taken relative to the recipe's
    folder, so a recipe shipped with its data (tiny_cpu) runs from any cwd. Paths that exist from the cwd keep their
    old meaning; command-line overrides are never rewritten."""
    data, validation, retention = raw.get("data"), raw.get("validation"), raw.get("retention")
    if isinstance(data, dict) and isinstance(data.get("shards"), list):
        for i, entry in enumerate(data["shards"]):
            if isinstance(entry, str):
                data["shards"][i] = _relative_to(entry, recipe_dir)
            elif isinstance(entry, dict) and isinstance(entry.get("path"), str):
                entry["path"] = _relative_to(entry["path"], recipe_dir)
    if isinstance(validation, dict) and isinstance(validation.get("prompts"), list):
        for item in validation["prompts"]:
            if isinstance(item, dict) and isinstance(item.get("images"), list):
                item["images"] = [_relative_to(x, recipe_dir) if isinstance(x, str) else x for x in item["images"]]
    if isinstance(retention, dict):
        for key in ("probes", "dinov2_model"):
            if isinstance(retention.get(key), str) and retention[key] not in ("shapes", "generic"):
                retention[key] = _relative_to(retention[key], recipe_dir)


def _relative_to(path: str, recipe_dir: Path) -> str:
    expanded = os.path.expanduser(path)
    if "://" in path or path.startswith("pipe:") or os.path.isabs(expanded) or glob.glob(expanded, recursive=True):
        return path
    candidate = str(recipe_dir / expanded)
    return candidate if glob.glob(candidate, recursive=True) else path  # neither: the error names the path as written
