"""`omnideft demo --family omnigen2`: the integration on the tiny OmniGen2, small enough for a CPU in about a minute.

Writes shards of an in-context shape task (each sample: one example pair and a query, so three OmniGen2 reference
images), trains a DEFT adapter on every linear of the tiny OmniGen2 transformer with the trainer, then measures what
the adapter changed and renders with the generator:

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

from omnideft.adapters import load_adapter
from omnideft.demo import DEFAULTS_OMNIGEN2
from omnideft.demo.plot import loss_plot
from omnideft.errors import UserError
from omnideft.eval.denoising import load_examples
from omnideft.families.generator import FamilyGenerator
from omnideft.families.omnigen2.batch import OmniGen2BatchBuilder, encode_batch
from omnideft.families.omnigen2.loss import flow_matching_loss
from omnideft.files import write_text_atomic
from omnideft.generate.contact_sheet import contact_sheet, stack_rows
from omnideft.images import save_image_atomic
from omnideft.model.omnigen2.folder import load_omnigen2
from omnideft.shapes.shards import write_task_shards
from omnideft.train.loop import train
from omnideft.train.recipe import load_recipe

DEMO_OMNIGEN2 = {**DEFAULTS_OMNIGEN2, "size": 32, "rank": 8, "lr": 1e-2, "render_steps": 8, "rendered": 2}
TASK = "flip"  # an in-context transform: example pair + query -> three reference images


def run_omnigen2_demo(out_dir: str = "demo_out", steps: int = DEMO_OMNIGEN2["steps"],
                      samples: int = DEMO_OMNIGEN2["samples"], seed: int = 0, progress: bool = True) -> dict:
    if steps < 1 or samples < 1:
        raise UserError(f"--steps {steps} and --samples {samples} must be at least 1")
    out, size = Path(out_dir), DEMO_OMNIGEN2["size"]
    t0 = time.perf_counter()
    shards = write_task_shards(out / "shards", [TASK], n_samples=samples, size=size, seed=seed, shard_size=samples,
                               n_examples=1)
    recipe = load_recipe(None, [
        "model.name=tiny", "model.family=omnigen2", f"model.seed={seed}", f"data.shards=[{shards}]",
        f"data.max_image_size={size}", "data.condition_dropout=0", f"adapter.rank={DEMO_OMNIGEN2['rank']}",
        f"train.lr={DEMO_OMNIGEN2['lr']}", f"train.max_steps={steps}", "train.batch_size=2",
        "train.checkpoint_every=0", f"train.seed={seed}", f"output.dir={out}", "output.tensorboard=false"])
    adapter = train(recipe, progress=progress)
    train_s = time.perf_counter() - t0

    losses = [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    save_image_atomic(loss_plot(losses), out / "loss.png")
    examples = load_examples([str(shards)], samples)
    fit = fixed_noise_losses(out / "base", adapter, examples, seed)

    generator = FamilyGenerator.from_pretrained(str(out / "base"))
    rows, change = [], []
    for ex in examples[:DEMO_OMNIGEN2["rendered"]]:
        pairs, query = [(ex.inputs[0], ex.inputs[1])], ex.inputs[2:]
        outputs = {}
        for label, adapters in (("base", []), ("base + DEFT", [str(adapter)])):
            generator.set_adapters(adapters)
            outputs[label] = generator(ex.instruction, ex.inputs, height=size, width=size,
                                       steps=DEMO_OMNIGEN2["render_steps"], seed=seed)[0]
        change.append(_mean_abs_difference(*outputs.values()))
        rows.append(contact_sheet(pairs, query, ex.output, output_label="target", more=list(outputs.items())))
    save_image_atomic(stack_rows(rows), out / "samples.png")

    k = max(1, len(losses) // 5)
    result = {"base_model": "tiny OmniGen2 (random weights)", "method": "deft", "rank": DEMO_OMNIGEN2["rank"],
              "task": TASK, "steps": steps, "train_samples": samples,
              "train_loss": {"first_steps": sum(losses[:k]) / k, "last_steps": sum(losses[-k:]) / k, "window": k},
              "fixed_noise_loss": fit, "render_change_8bit": sum(change) / len(change), "train_seconds": train_s,
              "total_seconds": time.perf_counter() - t0}
    write_text_atomic(out / "report.json", json.dumps(result, indent=2) + "\n")
    return result


def fixed_noise_losses(base: Path, adapter: Path, examples: list, seed: int) -> dict:
    """Mean flow-matching loss over `examples` with the same VAE samples, noise and t for base and base + adapter."""
    comps = load_omnigen2(str(base))
    batch = OmniGen2BatchBuilder(comps.tokenizer, 0.0, seed, max_output_pixels=DEMO_OMNIGEN2["size"] ** 2,
                                 max_side=DEMO_OMNIGEN2["size"])(examples)
    inputs = encode_batch(batch, comps.vae, comps.mllm, comps.tokenizer, torch.Generator().manual_seed(seed))
    out = {}
    with torch.no_grad():
        out["base"] = flow_matching_loss(comps.transformer, *inputs, torch.Generator().manual_seed(seed + 1)).mean()
        adapted = load_adapter(comps.transformer, adapter)
        out["adapted"] = flow_matching_loss(adapted, *inputs, torch.Generator().manual_seed(seed + 1)).mean()
    return {k: float(v) for k, v in out.items()}


def _mean_abs_difference(a, b) -> float:
    return float((torch.from_numpy(np.array(a, dtype=np.float32)) - torch.from_numpy(np.array(b, dtype=np.float32)))
                 .abs().mean())
