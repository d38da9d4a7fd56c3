"""The `tiny-run` demo (a family's `demo_preset` names it): the integration on the family's random `tiny` preset,
small enough for a CPU in about a minute.

Writes shards of an in-context shape task (each sample: one example pair and a query, so three input images), trains a
DEFT adapter on every linear of the tiny transformer with the trainer, then measures what the adapter changed through
the family's training backend and renders with its generator:

    loss.png, metrics.jsonl   the training loss per step
    report.json               training loss at the start / end, and the flow-matching loss on the training samples
                              at fixed noise and t for the base and for base + DEFT (the fit, measured)
    samples.png               per query: the example pair, the query, the target, base and base + DEFT outputs
                              (report.json: their mean absolute difference on 8-bit pixels)

The tiny model is random, not pretrained: the demo shows the pipeline (shards -> trainer -> adapter -> generation)
and that the loss falls, not image quality. Every number is measured in the run.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from omnideft.demo.plot import loss_plot
from omnideft.errors import UserError
from omnideft.eval.denoising import denoising_losses, load_examples
from omnideft.families.family import TrainingSettings
from omnideft.families.generator import FamilyGenerator
from omnideft.families.registry import get_family
from omnideft.files import write_text_atomic
from omnideft.generate.contact_sheet import contact_sheet, stack_rows
from omnideft.images import save_image_atomic
from omnideft.shapes.shards import write_task_shards
from omnideft.train.loop import train
from omnideft.train.recipe import load_recipe

# what the family's demo preset does not set (its steps and samples)
TINY_RUN = {"size": 32, "rank": 8, "lr": 1e-2, "render_steps": 8, "rendered": 2}
NOISE_DRAWS = 4  # per sample: one draw on a handful of samples is too noisy to show the fit
TASK = "flip"  # an in-context transform: example pair + query -> three input images


def run_tiny_run_demo(out_dir: str, *, family: str, steps: int, samples: int, seed: int = 0,
                      progress: bool = True) -> dict:
    """`family`: the registered family whose `tiny` trains (demo/__init__.py's run_family_demo passes it, with the
    steps and samples of its demo preset)."""
    if steps < 1 or samples < 1:
        raise UserError(f"--steps {steps} and --samples {samples} must be at least 1")
    out, size = Path(out_dir), TINY_RUN["size"]
    t0 = time.perf_counter()
    shards = write_task_shards(out / "shards", [TASK], n_samples=samples, size=size, seed=seed, shard_size=samples,
                               n_examples=1)
    recipe = load_recipe(None, [
        "model.name=tiny", f"model.family={family}", f"model.seed={seed}", f"data.shards=[{shards}]",
        f"data.max_image_size={size}", "data.condition_dropout=0", f"adapter.rank={TINY_RUN['rank']}",
        f"train.lr={TINY_RUN['lr']}", f"train.max_steps={steps}", "train.batch_size=2",
        "train.checkpoint_every=0", f"train.seed={seed}", f"output.dir={out}", "output.tensorboard=false"])
    adapter = train(recipe, progress=progress)
    train_s = time.perf_counter() - t0

    losses = [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    save_image_atomic(loss_plot(losses), out / "loss.png")
    examples = load_examples([str(shards)], samples)
    fit = fixed_noise_losses(family, out / "base", adapter, examples, seed)

    generator = FamilyGenerator.from_pretrained(str(out / "base"))
    rows, change = [], []
    for ex in examples[:TINY_RUN["rendered"]]:
        pairs, query = [(ex.inputs[0], ex.inputs[1])], ex.inputs[2:]
        outputs = {}
        for label, adapters in (("base", []), ("base + DEFT", [str(adapter)])):
            generator.set_adapters(adapters)
            outputs[label] = generator(ex.instruction, ex.inputs, height=size, width=size,
                                       steps=TINY_RUN["render_steps"], seed=seed)[0]
        change.append(_mean_abs_difference(*outputs.values()))
        rows.append(contact_sheet(pairs, query, ex.output, output_label="target", more=list(outputs.items())))
    save_image_atomic(stack_rows(rows), out / "samples.png")

    k = max(1, len(losses) // 5)
    result = {"base_model": f"tiny {get_family(family).title} (random weights)", "method": "deft",
              "rank": TINY_RUN["rank"],
              "task": TASK, "steps": steps, "train_samples": samples,
              "train_loss": {"first_steps": sum(losses[:k]) / k, "last_steps": sum(losses[-k:]) / k, "window": k},
              "fixed_noise_loss": fit, "render_change_8bit": sum(change) / len(change), "train_seconds": train_s,
              "total_seconds": time.perf_counter() - t0}
    write_text_atomic(out / "report.json", json.dumps(result, indent=2) + "\n")
    return result


def fixed_noise_losses(family: str, base: Path, adapter: Path, examples: list, seed: int) -> dict:
    """Mean denoising loss over `examples` with the same VAE samples, noise and t for base and base + adapter: the
    family's training loss (the one the trainer minimised), averaged over NOISE_DRAWS draws as `omnideft eval` does."""
    training = get_family(family).training_backend(TrainingSettings(str(base), max_image_size=TINY_RUN["size"]))
    comps = training.load("cpu")
    fit = denoising_losses({"base": comps.transformer}, training, comps, examples, seed + 1, NOISE_DRAWS)
    adapted, camera = training.load_adapter(comps, adapter)  # adapts the base in place: measured after it
    fit |= denoising_losses({"adapted": adapted}, training, comps, examples, seed + 1, NOISE_DRAWS, camera=camera)
    return {name: table["all"] for name, table in fit.items()}


def _mean_abs_difference(a, b) -> float:
    return float((torch.from_numpy(np.array(a, dtype=np.float32)) - torch.from_numpy(np.array(b, dtype=np.float32)))
                 .abs().mean())
