"""Small on-disk worlds for the Generator and studio tests: tiny adapters (trained for two steps, or random but
non-trivial), an adapter of a base of another shape, held-out shards, and a camera adapter with SfM shards."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from omnideft.adapters import AdapterSpec, apply_adapter, save_adapter
from omnideft.families.omnigen.model import load_omnigen, save_base
from omnideft.families.omnigen.targets import target_modules as omnigen_targets


def random_image(w: int, h: int, seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8))


def write_images(folder: Path, sizes: dict[str, tuple[int, int]]) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for i, (name, (w, h)) in enumerate(sizes.items()):
        out[name] = folder / f"{name}.png"
        random_image(w, h, i).save(out[name])
    return out


def random_adapter(out: Path, base: str, *, method: str = "lora", rank: int = 2, seed: int = 1,
                   transformer=None, camera: bool = False) -> Path:
    """An adapter with random (not identity) weights on the tiny base `base` (a saved folder), so it changes
    the pixels; `transformer` gives a base of another shape, `camera` adds a learned camera encoder."""
    comps = load_omnigen(base) if transformer is None else None
    model = apply_adapter(comps.transformer if comps else transformer, AdapterSpec(method=method, rank=rank,
                                                                                   targets="all-linear"),
                          targets=omnigen_targets)
    if camera:
        from omnideft.camera.conditioning import CameraSpec, attach_camera

        attach_camera(model.get_base_model(), comps.tokenizer, CameraSpec(encoder_hidden=8))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if any(k in name for k in ("lora_", "deft_", "camera_conditioning")):
                p.add_(torch.randn(p.shape, generator=gen) * 0.3)
    return save_adapter(model, out, base_name=base)


def trained_run(shards: Path, out: Path, method: str, seed: int) -> Path:
    """`omnideft train` in-process for two steps (lr high enough that the adapter moves the pixels)."""
    from omnideft.train.loop import train
    from omnideft.train.recipe import load_recipe

    recipe = load_recipe(None, ["model.name=tiny", f"data.shards=[{shards}]", "data.max_image_size=32",
                                f"adapter.method={method}", "adapter.rank=4", "train.max_steps=2",
                                "train.batch_size=2", "train.lr=5e-2", f"train.seed={seed}",
                                "train.checkpoint_every=100", f"output.dir={out}", "output.tensorboard=false"])
    return train(recipe, progress=False)


def other_shape_adapter(root: Path) -> Path:
    """A base of another shape (wider MLP) saved beside an adapter made on it."""
    from diffusers import OmniGenTransformer2DModel

    from omnideft.families.omnigen.model.tiny import tiny_transformer_config

    comps = load_omnigen("tiny")
    comps.transformer = OmniGenTransformer2DModel(**dict(tiny_transformer_config(), intermediate_size=96))
    save_base(comps, root / "base")
    return random_adapter(root / "adapter", str(root / "base"), transformer=comps.transformer)


def sfm_shards(root: Path) -> Path:
    """A three-view COLMAP scene built into shards with camera records (build-sfm)."""
    from data_builders.sfm import main as build_sfm
    from tests.camera_scene import write_scene

    write_scene(root / "scene", [0.0, 40.0, 80.0], size=32, focal=36.0)
    assert build_sfm(["--src", str(root / "scene" / "sparse"), "--images", str(root / "scene" / "images"),
                      "--out", str(root / "sfm"), "--resolution", "32", "--context-views", "1",
                      "--no-progress"]) == 0
    return root / "sfm"


def build_world(root: Path) -> dict[str, Path]:
    """Everything the studio tests start the app with (see the keys)."""
    from omnideft.shapes.shards import write_task_shards

    shards = write_task_shards(root / "shards", ["fill"], n_samples=8, size=32, seed=0, shard_size=4, n_examples=1)
    world = {
        "root": root,
        "heldout": write_task_shards(root / "heldout", ["fill"], n_samples=3, size=32, seed=1, shard_size=4,
                                     n_examples=1).parent,
        "a": trained_run(shards, root / "runs" / "a", "deft", seed=0),
        "b": trained_run(shards, root / "runs" / "b", "lora", seed=1),
        "other": other_shape_adapter(root / "other"),
        "sfm": sfm_shards(root / "cameras"),
        "empty": root / "empty",
    }
    world["base"] = root / "runs" / "a" / "base"
    world["camera"] = random_adapter(root / "cameras" / "adapter", str(world["base"]), camera=True, seed=3)
    world["empty"].mkdir()
    world.update(write_images(root / "images", {"ex_in": (32, 32), "ex_out": (32, 32), "query": (32, 32),
                                                "more": (32, 32), "big": (600, 600)}))
    return world
