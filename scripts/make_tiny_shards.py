"""Write the small synthetic data set that ships with the repo for `recipes/tiny_cpu.yaml` (about 400 KB).

    recipes/data/tiny_shapes/train/          48 "edge map -> filled shape" samples of the shape world's `fill` task
                                             (omnideft/shapes), one in-context example each, 4 shards of 12, seed 0
    recipes/data/tiny_shapes/heldout/train/  16 unseen samples (seed 1) for `omnideft eval`
    recipes/data/tiny_shapes/prompt/         the validation prompt (instruction.txt) and its images: an example pair
                                             and a query edge map (seed 2)

Run `PYTHONPATH=. python scripts/make_tiny_shards.py` after changing the shape world or the shard writer.
tests/test_recipes.py regenerates everything into a temporary folder and requires identical bytes (apart from the
manifests' `created` time), so the committed files can never drift from the code that reads them.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from omnideft.data.format.images import encode_image  # noqa: E402
from omnideft.shapes import make_sample  # noqa: E402
from omnideft.shapes.shards import write_task_shards  # noqa: E402

SIZE = 64
DEFAULT_OUT = REPO / "recipes" / "data" / "tiny_shapes"
PROMPT_IMAGES = ("example_edges.png", "example_shape.png", "query_edges.png")


def make_tiny_shards(out: Path = DEFAULT_OUT) -> Path:
    if out.exists():
        shutil.rmtree(out)
    # 4 shards: 2 ranks x 2 workers
    write_task_shards(out, ["fill"], n_samples=48, size=SIZE, seed=0, shard_size=12, n_examples=1)
    write_task_shards(out / "heldout", ["fill"], n_samples=16, size=SIZE, seed=1, shard_size=16, n_examples=1)
    sample = make_sample("fill", np.random.default_rng(2), SIZE, n_examples=1)
    (out / "prompt").mkdir()
    for name, img in zip(PROMPT_IMAGES, sample.images):
        (out / "prompt" / name).write_bytes(encode_image(img, "png"))
    (out / "prompt" / "instruction.txt").write_text(sample.instruction + "\n")  # tiny_cpu's validation prompt
    return out


if __name__ == "__main__":
    print(make_tiny_shards(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUT))
