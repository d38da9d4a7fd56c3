"""Held-out denoising loss per task: every model sees the same samples, noise and timesteps, so differences
come from the weights alone. Lower is better; it is the quantity training minimises, measured on unseen data."""

from __future__ import annotations

import contextlib
from collections import defaultdict

import torch

from omnideft.data.format.schema import SampleError
from omnideft.data.indexed import ShardIndex
from omnideft.data.shards import decode_sample
from omnideft.data.sources import resolve_sources


def load_examples(shards: list, n: int) -> list:
    """The first n readable samples in shard order (sources in the order given); fewer if there are fewer."""
    out = []
    for source in resolve_sources(shards):
        index = ShardIndex(source.urls)
        for i in range(len(index)):
            if len(out) == n:
                return out
            try:
                out.append(decode_sample(index.read(i)))
            except SampleError:
                continue
    return out


@torch.no_grad()
def denoising_losses(models: dict, training, components, examples: list, seed: int = 1234, repeats: int = 1,
                     camera=None) -> dict[str, dict[str, float]]:
    """{model name: {task: mean loss, "all": mean loss}} over `examples`, `repeats` noise draws each: the model
    family's training loss (`training`, a families.family.TrainingBackend; `components` its loaded base) without
    condition dropout, in fp32. `camera` (what the backend's load_adapter returned) gives samples' cameras to models
    with camera conditioning."""
    builder = training.batch_builder(components, camera=camera)
    groups: dict[tuple, list] = defaultdict(list)
    for ex in examples:  # one output size per forward
        groups[builder.output_size(ex)].append(ex)
    results = {}
    for name, model in models.items():
        per_task: dict[str, list[float]] = defaultdict(list)
        for gi, (_, group) in enumerate(sorted(groups.items())):
            batch = builder(group)
            for r in range(repeats):
                g = torch.Generator().manual_seed(seed + 1000 * gi + r)
                losses = training.loss(model, components, batch, g, contextlib.nullcontext)
                for task, loss in zip(batch["tasks"], losses.tolist()):
                    per_task[task].append(loss)
        table = {task: sum(v) / len(v) for task, v in sorted(per_task.items())}
        table["all"] = sum(sum(v) for v in per_task.values()) / sum(len(v) for v in per_task.values())
        results[name] = table
    return results
