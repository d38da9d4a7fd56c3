"""Fault-injection suite (docs/reliability.md): every fault runs as a user meets it - real `omnideft` processes,
real files damaged on disk, real file-size limits for a full disk - and each test asserts the exit code, the one
line naming the culprit, and that nothing written before is lost."""

import json
import shutil
from pathlib import Path

import pytest
from safetensors.torch import load_file

from omnideft.shapes.shards import write_task_shards
from tests.helpers import run_cli

# Flags first, overrides after them: the CLI takes `key=value` on either side of a flag.
BASE = ["--no-progress", "model.name=tiny", "data.max_image_size=32", "adapter.rank=4", "train.batch_size=2",
        "train.lr=1e-2", "train.max_steps=6", "train.checkpoint_every=2", "train.keep_checkpoints=0"]


@pytest.fixture(scope="session")
def fault_shards(tmp_path_factory):
    return write_task_shards(tmp_path_factory.mktemp("fault-shards"), ["fill"], n_samples=12, size=32, seed=0,
                             shard_size=6, n_examples=1)


def train_cli(shards, out, *extra, env=None):
    return run_cli("train", *BASE, f"data.shards=[{shards}]", f"output.dir={out}", *extra, env=env)


@pytest.fixture(scope="session")
def finished_run(fault_shards, tmp_path_factory):
    """A finished 6-step run with checkpoints at steps 2, 4 and 6: the reference every fault is compared to."""
    out = tmp_path_factory.mktemp("finished") / "run"
    proc = train_cli(fault_shards, out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def copy_run(run: Path, dest: Path) -> Path:
    shutil.copytree(run, dest)
    return dest


def adapter_tensors(run: Path) -> dict:
    return load_file(run / "adapter" / "adapter_model.safetensors")


def flip_tensor_bytes(path: Path, count: int = 16) -> None:
    """Flip bytes inside the tensor data of a safetensors file (after its JSON header), as bit rot would: the file
    still parses, only the values change."""
    data = bytearray(path.read_bytes())
    header = 8 + int.from_bytes(data[:8], "little")
    assert len(data) - header > 4 * count, path
    middle = header + (len(data) - header) // 2
    for i in range(middle, middle + count):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def tmp_leftovers(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob(".tmp-*"))


def read_metrics(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
