"""`omnideft plan`: a recipe (with overrides) -> the per-component table of its predicted peak per GPU and, for a GPU
size, the presets' peaks and the cheapest that fits. Prints Markdown tables (docs/memory.md holds them for the real
OmniGen)."""

from __future__ import annotations

import dataclasses
import sys

from omnideft.errors import UserError
from omnideft.families.registry import default_family
from omnideft.plan.families import model_family, trainer_refuses
from omnideft.plan.presets import (
    PRESETS,
    apply_preset,
    cheapest_fit,
    parse_size,
    preset_plans,
    recipe_plan,
    recipe_shapes,
    recipe_workload,
    refused_keys,
)
from omnideft.sizing.estimate import GB, Plan, Workload


def plan_table(plan: Plan) -> str:
    rows = ["| component | GB | note |", "|---|---:|---|"]
    rows += [f"| {line.component} | {_gb(line.bytes)} | {line.note} |" for line in plan.lines]
    rows.append(f"| **peak per GPU** | **{plan.peak / GB:.2f}** | |")
    return "\n".join(rows)


def presets_table(plans: dict[str, Plan], gpu_bytes: float | None = None) -> str:
    rows = ["| preset | switches | image px | peak GB |" + (" fits |" if gpu_bytes else ""),
            "|---|---|---:|---:|" + ("---|" if gpu_bytes else "")]
    for name, plan in plans.items():
        fits = (" yes |" if plan.peak <= gpu_bytes else " no |") if gpu_bytes else ""
        rows.append(f"| {name} | {PRESETS[name].describe()} | {plan.workload.image_size} | {plan.peak / GB:.1f} |"
                    + fits)
    return "\n".join(rows)


def _gb(n: float) -> str:
    return f"{n / GB:.2f}" if n >= 0.01 * GB or n == 0 else f"{n / GB:.6f}"  # toy models: their bytes still show


def _activations(plan: Plan) -> float:
    return plan.part("activations (saved)") + plan.part("activations (recompute)")


def describe_workload(work: Workload) -> str:
    inputs = "that size" if work.input_size == work.image_size else f"{work.input_size}x{work.input_size}"
    return (f"batch {work.batch}, {work.image_size}x{work.image_size} output + {work.input_images} input image(s) "
            f"of {inputs}, {work.text_tokens} text tokens: {work.seq_len} tokens per sample")


def inputs_in_shards(shard_entries: list, samples_per_source: int = 64) -> int | None:
    """The most input images of a sample among the first samples of each local shard source (their JSON only);
    None when the recipe names no readable local shards (the caller then assumes 2)."""
    import json

    from omnideft.data.indexed import ShardIndex
    from omnideft.data.sources import resolve_sources
    from omnideft.data.stream import is_remote

    entries = [e for e in shard_entries if not is_remote(e if isinstance(e, str) else str(e.get("path", "")))]
    try:
        sources = resolve_sources(entries) if entries else []
    except UserError:
        return None
    most = None
    for source in sources:
        index = ShardIndex(source.urls)
        for i in range(min(len(index), samples_per_source)):
            try:
                meta = json.loads(index.read(i).get("json", b"{}"))
            except (OSError, ValueError):
                continue
            most = max(most or 0, len(meta.get("inputs") or []))
    return most


def run_plan(recipe, gpu_memory: str | None, gpus: int, input_images: int | None, text_tokens: int | None,
             out=None) -> int:
    out = out or sys.stdout  # looked up at call time: a redirected stdout is honoured
    if gpus < 1:
        raise UserError(f"--gpus {gpus} must be at least 1")
    gpu_bytes = parse_size(gpu_memory) if gpu_memory else None
    if input_images is None:
        input_images = inputs_in_shards(recipe.data.shards)
        input_images = 2 if input_images is None else input_images
    given = {} if text_tokens is None else {"text_tokens": text_tokens}  # else the family's (its plan entry's)
    work = recipe_workload(recipe, input_images=input_images, **given)
    family = model_family(recipe.model)
    refuses = trainer_refuses(family)
    shapes = recipe_shapes(recipe)
    chosen = recipe.train.memory
    plans = preset_plans(recipe, shapes, work, gpus)
    if chosen == "auto":
        chosen = cheapest_fit(plans, gpu_bytes, refuses) if gpu_bytes else None
    if chosen:
        recipe = apply_preset(recipe, chosen)
        work = dataclasses.replace(work, image_size=recipe.data.max_image_size)
        if PRESETS[chosen].vae_on_gpu is False and recipe.data.latents is None:
            recipe = dataclasses.replace(recipe, data=dataclasses.replace(recipe.data, latents="<cache>"))
    plan = recipe_plan(recipe, shapes, work, gpus)
    toggled = dataclasses.replace(recipe, train=dataclasses.replace(
        recipe.train, gradient_checkpointing=not recipe.train.gradient_checkpointing))
    other = recipe_plan(toggled, shapes, work, gpus)
    with_gc, without_gc = (plan, other) if recipe.train.gradient_checkpointing else (other, plan)
    print(f"# plan: {recipe.model.name}" + (f" ({family.name})" if family.name != default_family().name else "")
          + f", {recipe.adapter.method} r{recipe.adapter.rank} on {len(shapes.adapted)} linears, {gpus} GPU(s)"
          + (f", preset {chosen}" if chosen else ""), file=out)
    if shapes.source:
        print(f"configs: {shapes.source}", file=out)
    print(describe_workload(work) + "\n", file=out)
    print(plan_table(plan) + "\n", file=out)
    print(f"activations {_gb(_activations(with_gc))} GB with gradient checkpointing (peak "
          f"{with_gc.peak / GB:.2f} GB), {_gb(_activations(without_gc))} GB without (peak "
          f"{without_gc.peak / GB:.2f} GB)\n", file=out)
    print(presets_table(plans, gpu_bytes) + "\n", file=out)
    if gpu_bytes is None:
        return 0
    if recipe.train.memory not in (None, "auto") and plan.peak > gpu_bytes:
        raise UserError(f"train.memory={recipe.train.memory} needs {plan.peak / GB:.1f} GB per GPU; "
                        f"--gpu-memory is {gpu_bytes / GB:.1f} GB (table above)")
    if recipe.train.memory in (None, "auto") and not all(refused_keys(n, refuses) for n in plans):
        best = cheapest_fit(plans, gpu_bytes, refuses)
        if best is None:
            raise UserError(f"no preset fits {gpu_bytes / GB:.1f} GB; the smallest, 12gb, needs "
                            f"{plans['12gb'].peak / GB:.1f} GB (table above): lower data.max_image_size or add GPUs")
        print(f"cheapest preset that fits {gpu_bytes / GB:.0f} GB: train.memory={best} "
              f"({plans[best].peak / GB:.1f} GB predicted)", file=out)
    if refuses:
        print(f"note: {family.name} training does not take {' / '.join(refuses)} yet, which the "
              "presets set: they are planned, not applied (train.memory is refused); train as the recipe is (the "
              "first table)", file=out)
    return 0


REFERENCE_RECIPE = "recipes/omnigen_deft_r32.yaml"
REFERENCE_OVERRIDES = ("data.max_image_size=1024", "train.batch_size=1")
REFERENCE_GPUS_GB = (80, 48, 24, 16, 12)


def reference_plans_md(recipe) -> str:
    """docs/memory.md's tables for `recipe` (REFERENCE_RECIPE with REFERENCE_OVERRIDES: the real OmniGen, DEFT r32,
    1024 px, batch 1) with 2 input images: every preset's peak, then for each GPU size the full table of the
    cheapest preset that fits it."""
    work = Workload(batch=recipe.train.batch_size, image_size=recipe.data.max_image_size, input_images=2)
    shapes = recipe_shapes(recipe)
    plans = preset_plans(recipe, shapes, work)
    out = [f"Model `{recipe.model.name}` (config shipped with omnideft), adapter "
           f"{recipe.adapter.method} r{recipe.adapter.rank} on {len(shapes.adapted)} linears "
           f"({shapes.adapter_params / 1e6:.1f}M parameters), {describe_workload(work)}.", "",
           presets_table(plans), ""]
    for size in REFERENCE_GPUS_GB:
        best = cheapest_fit(plans, size * GB)
        out += [f"#### {size} GB: `train.memory={best}`", "", plan_table(plans[best]), ""]
    return "\n".join(out).rstrip()
