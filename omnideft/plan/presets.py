"""The memory presets of `train.memory` and how a recipe becomes a plan.

A preset names the GPU size it is made for and switches, fastest first: gradient checkpointing, the frozen base's
storage (bf16, int8, nf4), where the VAE encodes (on the GPU, or ahead of time into a latent cache: `data.latents`),
ZeRO-2 with the optimizer offloaded when there are several GPUs (planned; the launch config applies it), and a cap on
the image size. Explicit recipe values
that save more memory than the preset's are kept. `auto` picks, for the GPU in use, the first (fastest) preset whose
plan fits. docs/memory.md has each preset's plan for the real OmniGen.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from pathlib import Path

from omnideft.errors import UserError
from omnideft.plan.families import model_family, plan_family, trainer_refuses
from omnideft.sizing.estimate import GB, Plan, Setup, Workload, plan_memory
from omnideft.sizing.shapes import ModelShapes


@dataclass(frozen=True)
class Preset:
    name: str
    checkpointing: bool
    base: str  # storage of the frozen base
    vae_on_gpu: bool
    max_image_size: int | None = None
    zero_when_multi_gpu: bool = False  # ZeRO-2 + optimizer offload across GPUs

    @property
    def sets(self) -> tuple[str, ...]:
        """The recipe keys outside `train` this preset sets (a family's trainer may not take them all)."""
        return (("model.quantize",) + (() if self.vae_on_gpu else ("data.latents",))
                + (("data.max_image_size",) if self.max_image_size else ()))

    @property
    def gpu_bytes(self) -> float:
        return int(self.name.removesuffix("gb")) * GB

    def describe(self) -> str:
        parts = ["gradient checkpointing" if self.checkpointing else "no checkpointing", f"{self.base} base",
                 "VAE on the GPU" if self.vae_on_gpu else "cached latents (no VAE)"]
        if self.zero_when_multi_gpu:
            parts.append("ZeRO-2 + optimizer offload on >1 GPU")
        if self.max_image_size:
            parts.append(f"images <= {self.max_image_size} px")
        return ", ".join(parts)


PRESETS = {p.name: p for p in (  # fastest first
    Preset("80gb", checkpointing=False, base="bf16", vae_on_gpu=True),
    Preset("48gb", checkpointing=True, base="bf16", vae_on_gpu=True),
    Preset("24gb", checkpointing=True, base="bf16", vae_on_gpu=False, zero_when_multi_gpu=True),
    # quantised bases do not run under DeepSpeed (train/setup.py): DDP on several GPUs
    Preset("16gb", checkpointing=True, base="int8", vae_on_gpu=False),
    Preset("12gb", checkpointing=True, base="nf4", vae_on_gpu=False, max_image_size=768),
)}
BASE_SAVING = {"fp32": 0, "bf16": 1, "fp8": 2, "int8": 2, "nf4": 3}  # more is smaller


def parse_size(text: str) -> float:
    """'24GB', '24gb', '24', '23.5GiB' -> bytes (GB = 1e9, GiB = 2^30)."""
    m = re.fullmatch(r"\s*([0-9.]+)\s*(gib|gb|g)?\s*", text.lower())
    if not m:
        raise UserError(f"--gpu-memory {text!r} is not a size like 24GB")
    return float(m.group(1)) * (2**30 if m.group(2) == "gib" else GB)


def apply_preset(recipe, name: str, strict: bool = False):
    """The recipe with preset `name` switched on. Values of the recipe that already save more are kept, unless
    `strict` (the presets table compares the presets' own switches)."""
    preset = PRESETS[name]
    model, data, train = recipe.model, recipe.data, recipe.train
    quantize = model.quantize
    if strict or BASE_SAVING[preset.base] > BASE_SAVING[quantize or "fp32"]:
        quantize = preset.base
    size = min(data.max_image_size, preset.max_image_size) if preset.max_image_size else data.max_image_size
    return dataclasses.replace(
        recipe, model=dataclasses.replace(model, quantize=quantize),
        data=dataclasses.replace(data, max_image_size=size),
        train=dataclasses.replace(train, memory=name, gradient_checkpointing=preset.checkpointing if strict
                                  else train.gradient_checkpointing or preset.checkpointing))


def recipe_setup(recipe, gpus: int = 1) -> Setup:
    zero, offload = _deepspeed_zero(recipe.launch.deepspeed)
    preset = PRESETS.get(recipe.train.memory)
    if preset and preset.zero_when_multi_gpu and gpus > 1:
        zero, offload = max(zero, 2), True
    return Setup(base=recipe.model.quantize or "fp32",
                 compute={"no": "fp32"}.get(recipe.train.mixed_precision, recipe.train.mixed_precision),
                 checkpointing=recipe.train.gradient_checkpointing, vae_on_gpu=recipe.data.latents is None,
                 zero_stage=zero, offload_optimizer=offload, gpus=gpus)


def _deepspeed_zero(path: str | None) -> tuple[int, bool]:
    if not path or not Path(path).is_file():
        return 0, False
    zero = json.loads(Path(path).read_text()).get("zero_optimization", {})
    device = (zero.get("offload_optimizer") or {}).get("device", "none")
    return int(zero.get("stage", 0)), device not in ("none", None)


def recipe_plan(recipe, shapes: ModelShapes, work: Workload, gpus: int = 1) -> Plan:
    return plan_memory(shapes, recipe_setup(recipe, gpus), work, recipe.adapter.rank)


def recipe_shapes(recipe) -> ModelShapes:
    return plan_family(recipe.model).shapes(recipe.model.name, recipe.adapter)


def recipe_workload(recipe, **fields) -> Workload:
    """The recipe's step as the planner sees it (its batch and largest image size, `fields` beyond), in the
    sequence its model family makes."""
    return Workload(batch=recipe.train.batch_size, image_size=recipe.data.max_image_size,
                    **{**plan_family(recipe.model).workload, **fields})


def preset_plans(recipe, shapes: ModelShapes, work: Workload, gpus: int = 1) -> dict[str, Plan]:
    """Each preset's own plan (its switches, not the recipe's) for this recipe's model, adapter and workload; the
    preset's image-size cap shrinks the workload."""
    plans = {}
    for name, preset in PRESETS.items():
        applied = apply_preset(_without_latents_check(recipe, preset), name, strict=True)
        size = min(work.image_size, applied.data.max_image_size)
        plans[name] = recipe_plan(applied, shapes, dataclasses.replace(work, image_size=size), gpus)
    return plans


def _without_latents_check(recipe, preset: Preset):
    """For planning, a preset that encodes ahead of time is planned as if the cache were there."""
    if preset.vae_on_gpu:
        return recipe
    return dataclasses.replace(recipe, data=dataclasses.replace(recipe.data, latents=recipe.data.latents or "<cache>"))


def cheapest_fit(plans: dict[str, Plan], gpu_bytes: float, refuses: tuple[str, ...] = ()) -> str | None:
    """The fastest preset whose peak fits `gpu_bytes` and that sets no key in `refuses`, or None."""
    return next((name for name, plan in plans.items()
                 if plan.peak <= gpu_bytes and not refused_keys(name, refuses)), None)


def refused_keys(name: str, refuses: tuple[str, ...]) -> list[str]:
    """The keys preset `name` sets that a trainer refusing `refuses` does not take."""
    return [key for key in PRESETS[name].sets if key in refuses]


def resolve_memory(recipe, gpu_bytes: float | None, work: Workload | None = None):
    """The recipe as it trains: `train.memory` applied. `auto` without a GPU (`gpu_bytes` None) changes nothing."""
    name = recipe.train.memory
    if name is None:
        return recipe
    family = model_family(recipe.model)
    refuses = trainer_refuses(family)
    if name == "auto" and all(refused_keys(n, refuses) for n in PRESETS):
        raise UserError(f"train.memory=auto: every preset sets {' or '.join(refuses)}, which "
                        f"{family.name} training does not take yet; remove train.memory and set "
                        "train.gradient_checkpointing / train.mixed_precision yourself (docs/memory.md)")
    if name == "auto" and gpu_bytes is None:
        return recipe
    if name == "auto":
        work = work or recipe_workload(recipe)
        plans = preset_plans(recipe, recipe_shapes(recipe), work)
        name = cheapest_fit(plans, gpu_bytes, refuses)
        if name is None:
            raise UserError(f"train.memory=auto: no preset fits this GPU ({gpu_bytes / GB:.1f} GB); the smallest, "
                            f"12gb, needs {plans['12gb'].peak / GB:.1f} GB (omnideft plan shows the table)")
    if refused := refused_keys(name, refuses):
        raise UserError(f"train.memory={name} sets {' and '.join(refused)}, which {family.name} training does not "
                        "take yet; remove train.memory and set train.gradient_checkpointing / "
                        "train.mixed_precision yourself (docs/memory.md)")
    applied = apply_preset(recipe, name)
    if not PRESETS[name].vae_on_gpu and applied.data.latents is None:
        raise UserError(f"train.memory={name} encodes images ahead of time: set data.latents to a cache written by "
                        "`omnideft cache-latents` (docs/memory.md)")
    return applied
