"""Write the synthetic in-context dataset as real contract-1 shards with the contract's ShardWriter."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from omnideft.data.format.writer import BuiltSample, InputImage, ShardWriter
from omnideft.demo.shapes import random_pair
from omnideft.prompts.in_context import example_clause

TASK = "demo/conditional_generation/edges"


def in_context_instruction(n_examples: int, caption: str) -> str:
    """OmniGen-style interleaved instruction: example (condition, result) pairs, then the query condition."""
    parts = []
    for i in range(n_examples):
        parts.append(example_clause(i))
    q = 2 * n_examples + 1
    parts.append(f"now draw {caption} from the edges <img><|image_{q}|></img>")
    return " ".join(parts)


def write_shapes_dataset(out_dir: str | Path, n_samples: int = 64, size: int = 64, n_examples: int = 1,
                         seed: int = 0, shard_size: int = 32) -> Path:
    rng = np.random.default_rng(seed)
    args = {"n_samples": n_samples, "size": size, "n_examples": n_examples, "seed": seed}
    with ShardWriter(out_dir, split="train", prefix="shapes", shard_size=shard_size, builder="omnideft-demo",
                     builder_version="1", args=args, source_fingerprint=f"procedural-seed{seed}") as writer:
        for i in range(n_samples):
            inputs = []
            for _ in range(n_examples):
                edges, img, _ = random_pair(rng, size)
                inputs += [InputImage(edges, "example_condition"), InputImage(img, "example_output")]
            q_edges, q_img, caption = random_pair(rng, size)
            inputs.append(InputImage(q_edges, "query_condition"))
            writer.add(BuiltSample(key=f"shapes_{i:06d}", task=TASK, instruction=in_context_instruction(
                n_examples, caption), inputs=inputs, output=q_img, caption=caption,
                source={"dataset": "procedural-shapes", "split": "train", "ids": [str(i)]}))
    return Path(out_dir) / "train"
