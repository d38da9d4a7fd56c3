"""Shape-world tasks written as contract-1 shards (the same writer the builders use), so the trainer, `omnideft
eval` and `check-shards` read them like any built data set. Deterministic: a seed gives byte-identical shards.

Task names in the shards are `shapes/<family>/<task>` (e.g. `shapes/b/flip`); inputs are the example pairs in order,
then the query's images, with roles example_condition / example_output / query_condition.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from omnideft.data.format.writer import BuiltSample, InputImage, ShardWriter
from omnideft.shapes.tasks import TASKS, ShapeSample, make_sample

BUILDER = "omnideft-shapes"
BUILDER_VERSION = "1"


def shard_task_name(task: str) -> str:
    return f"shapes/{TASKS[task].family.lower()}/{task}"


def built_sample(sample: ShapeSample, key: str, index: int, split: str) -> BuiltSample:
    inputs = [InputImage(im, role) for a, b in sample.examples
              for im, role in ((a, "example_condition"), (b, "example_output"))]
    inputs += [InputImage(im, "query_condition") for im in sample.query_images]
    return BuiltSample(key=key, task=shard_task_name(sample.task), instruction=sample.instruction, inputs=inputs,
                       output=sample.target, caption=sample.query_text,
                       source={"dataset": "procedural-shapes", "split": split, "ids": [str(index)]})


def write_task_shards(out_dir: str | Path, tasks: list[str], n_samples: int, size: int = 64, seed: int = 0,
                      shard_size: int = 64, split: str = "train", n_examples: int | None = None) -> Path:
    """`n_samples` samples, tasks in turn; `n_examples` example pairs each (None: drawn in the task's range).
    Returns the split folder (`<out_dir>/<split>`)."""
    unknown = [t for t in tasks if t not in TASKS]
    if unknown or not tasks:
        raise ValueError(f"unknown shape tasks {unknown or tasks}; known: {list(TASKS)}")
    rng = np.random.default_rng(seed)
    args = {"tasks": list(tasks), "n_samples": n_samples, "size": size, "seed": seed, "n_examples": n_examples}
    with ShardWriter(out_dir, split=split, prefix="shapes", shard_size=shard_size, builder=BUILDER,
                     builder_version=BUILDER_VERSION, args=args, source_fingerprint=f"procedural-seed{seed}") as w:
        for i in range(n_samples):
            sample = make_sample(tasks[i % len(tasks)], rng, size, n_examples)
            w.add(built_sample(sample, f"shapes_{i:06d}", i, split))
    return Path(out_dir) / split
