"""Benchmark: build-visualcloze samples/s with 1 and 2 workers against the codec limit.

The codec limit decodes and re-encodes the very images that end up in the shards (same formats, one process), so
`ratio_vs_codec_1w` says how much of the build time is spent beyond unavoidable image coding. Runs are interleaved
(1w, 2w, codec, 1w, 2w, codec, ...) to cancel machine drift; medians are reported. No arguments; about a minute.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import statistics
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")

CELL = 256
ROWS = 64
SAMPLES = 160
REPEATS = 3
IMAGE_COLUMNS = ["ref", "target", "canny", "depth", "hed", "normal", "mlsd", "openpose", "sam2_mask", "uniformer",
                 "foreground", "qwen_2_5_mask", "DepthEdit", "FillEdit_image_0"] + [
    f"{s}_{k}_0" for s in ("InstantStyle", "ReduxStyle") for k in ("image", "ref")]


def photo_like(seed: int) -> bytes:
    """A smooth image with mild noise, JPEG-encoded like Graph200K's images."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:CELL, 0:CELL].astype(np.float32) / CELL
    base = np.stack([np.sin(xx * rng.uniform(2, 9) + c) * np.cos(yy * rng.uniform(2, 9)) for c in range(3)], -1)
    arr = (base * 90 + 128 + rng.normal(0, 6, base.shape)).clip(0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def make_source(root: Path) -> Path:
    from datasets import Dataset, DatasetDict, Features, Value
    from datasets import Image as ImageFeature

    feats = Features({**{c: ImageFeature() for c in IMAGE_COLUMNS},
                      "description": {"item": Value("string"), "description_0": Value("string")}})
    data = {c: [{"bytes": photo_like(r * 100 + j), "path": None} for r in range(ROWS)]
            for j, c in enumerate(IMAGE_COLUMNS)}
    data["description"] = [{"item": "thing", "description_0": f"number {r}"} for r in range(ROWS)]
    path = root / "graph200k"
    DatasetDict({"train": Dataset.from_dict(data, features=feats)}).save_to_disk(str(path))
    return path


def build(src: Path, out: Path, workers: int, cpu: list | None = None) -> float:
    from data_builders.visualcloze import main

    shutil.rmtree(out, ignore_errors=True)
    start, start_cpu = time.perf_counter(), time.process_time()
    rc = main(["--src", str(src), "--out", str(out), "--resolution", str(CELL), "--max-samples", str(SAMPLES),
               "--shard-size", "40", "--workers", str(workers), "--no-progress"])
    elapsed = time.perf_counter() - start
    if cpu is not None:
        cpu.append((time.process_time() - start_cpu) / elapsed)
    if rc != 0:
        raise SystemExit(f"build failed with exit code {rc}")
    return elapsed


def shard_images(out: Path) -> list[tuple[str, bytes]]:
    images = []
    for shard in sorted((out / "train").glob("*.tar")):
        with tarfile.open(shard) as tar:
            for m in tar:
                if not m.name.endswith(".json"):
                    images.append((m.name.rsplit(".", 1)[1], tar.extractfile(m).read()))
    return images


def codec_pass(images: list[tuple[str, bytes]]) -> float:
    from omnideft.data.format.images import encode_image

    start = time.perf_counter()
    for ext, data in images:
        img = Image.open(io.BytesIO(data))
        img.load()
        encode_image(img, ext)
    return time.perf_counter() - start


def _burn(n: int) -> int:
    total = 0
    for i in range(n):
        total += i * i
    return total


def machine_parallel_speedup(n: int = 3_000_000) -> float:
    """What 2 processes of pure Python arithmetic gain over 1 right now: the ceiling for speedup_2w."""
    import multiprocessing

    start = time.perf_counter()
    _burn(n)
    _burn(n)
    serial = time.perf_counter() - start
    with multiprocessing.get_context("fork").Pool(2) as pool:
        start = time.perf_counter()
        pool.map(_burn, [n, n])
        parallel = time.perf_counter() - start
    return serial / parallel


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="bench-builders-") as tmp:
        tmp = Path(tmp)
        src = make_source(tmp)
        times: dict[str, list[float]] = {"1w": [], "2w": [], "codec": []}
        main_cpu_2w: list[float] = []
        machine: list[float] = []
        load_before = os.getloadavg()[0]
        build(src, tmp / "warm", 1)  # warm caches and imports
        images = shard_images(tmp / "warm")
        samples = json.loads((tmp / "warm" / "train" / "manifest.json").read_text())["samples"]
        for _ in range(REPEATS):
            times["1w"].append(build(src, tmp / "out1", 1))
            times["2w"].append(build(src, tmp / "out2", 2, main_cpu_2w))
            times["codec"].append(codec_pass(images))
            machine.append(machine_parallel_speedup())
        med = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "samples": samples,
        "images": len(images),
        "cell_px": CELL,
        "samples_per_s_1w": round(samples / med["1w"], 2),
        "samples_per_s_2w": round(samples / med["2w"], 2),
        "codec_limit_per_s_1w": round(samples / med["codec"], 2),
        "ratio_vs_codec_1w": round(med["codec"] / med["1w"], 3),
        "speedup_2w": round(med["1w"] / med["2w"], 3),
        # context for speedup_2w: the main process's busy share with 2 workers (writer overhead), what 2 processes
        # of pure arithmetic gain on this machine at the same time (other jobs on the 2 cores lower that ceiling),
        # and the 1-minute load before the runs
        "main_process_busy_2w": round(statistics.median(main_cpu_2w), 3),
        "machine_parallel_speedup": round(statistics.median(machine), 3),
        "loadavg_1m_before": round(load_before, 2),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
