"""Write the small synthetic data set that ships with the repo for `recipes/tiny_cpu.yaml` (about 400 KB).

    recipes/data/tiny_shapes/train/          48 "edges -> filled shape" in-context samples, 4 shards of 12, seed 0
    recipes/data/tiny_shapes/heldout/train/  16 unseen samples (seed 1) for `omnideft eval`
    recipes/data/tiny_shapes/prompt/*.png    the validation prompt's images: an example pair and a query edge map

Run `PYTHONPATH=. python scripts/make_tiny_shards.py` after changing the demo's shapes or the shard writer.
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
from omnideft.demo.dataset import write_shapes_dataset  # noqa: E402
from omnideft.demo.shapes import random_pair  # noqa: E402

SIZE = 64
DEFAULT_OUT = REPO / "recipes" / "data" / "tiny_shapes"
PROMPT_IMAGES = ("example_edges.png", "example_shape.png", "query_edges.png")


def make_tiny_shards(out: Path = DEFAULT_OUT) -> Path:
    if out.exists():
        shutil.rmtree(out)
    write_shapes_dataset(out, n_samples=48, size=SIZE, seed=0, shard_size=12)  # 4 shards: 2 ranks x 2 workers
    write_shapes_dataset(out / "heldout", n_samples=16, size=SIZE, seed=1, shard_size=16)
    rng = np.random.default_rng(2)
    ex_edges, ex_shape, _ = random_pair(rng, SIZE)
    query_edges, _, caption = random_pair(rng, SIZE)
    (out / "prompt").mkdir()
    for name, img in zip(PROMPT_IMAGES, (ex_edges, ex_shape, query_edges)):
        (out / "prompt" / name).write_bytes(encode_image(img, "png"))
    (out / "prompt" / "caption.txt").write_text(caption + "\n")  # what the query should become (tiny_cpu's prompt)
    return out


if __name__ == "__main__":
    print(make_tiny_shards(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUT))
