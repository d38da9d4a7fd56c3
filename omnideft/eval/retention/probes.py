"""The retention gauge's probes: prompts the base already answers, with their input images and, where known, the
answer it should give (a target scored with the shape world's exact masks: IoU and colour error).

Two shipped sets, `retention.probes: shapes | generic`, and probe files:

  shapes   one query of each task of family A of the shape world (omnideft/shapes: what the pretrained `small`
           base knows), cycled to PROBES_PER_SET, with their targets; drawn from a fixed seed at the render size
  generic  PROBES_PER_SET short text-to-image prompts of everyday scenes, no targets (any base)

A probe file is YAML (a list of probes) or JSONL (one probe per line); a probe is a mapping:

  prompt   str, required; input images are referred to as <|image_1|>, ... (as in validation.prompts)
  images   [paths] input images (relative paths: from the probe file's folder)
  height, width   the answer's size (default: the gauge's size)
  target   path of the image the answer should be (scored: IoU of the shape masks, colour error)
  colour   [r, g, b] the target shape's colour (colour error needs it)
  kind     filled | edges: how the target's mask is read (default filled)

Everything is read and checked here, before any model loads: a missing file, an unknown key, a prompt whose image
tags do not match its images, more images than the model family takes are one line naming the probe.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from omnideft.data.format.schema import tag_numbers
from omnideft.errors import UserError
from omnideft.files import read_user_text
from omnideft.images import load_image
from omnideft.prompts.tags import check_tags
from omnideft.shapes.tasks import TASKS, make_sample, task_names

SETS = ("shapes", "generic")
PROBES_PER_SET = 8
SHAPES_SEED = 20240  # the shape-world probes' draw: fixed, so every run of every base sees the same queries
GENERIC = ("a photo of a cat sitting on a windowsill", "a red apple on a wooden table",
           "a mountain lake at sunrise", "a city street at night in the rain", "a bowl of fruit, oil painting",
           "a dog running on a beach", "a lighthouse on a cliff above the sea", "a cup of coffee on a desk")
KEYS = {"prompt", "images", "height", "width", "target", "colour", "kind"}
KINDS = ("filled", "edges")


@dataclass
class Probe:
    prompt: str
    images: list[Image.Image] = field(default_factory=list)
    height: int | None = None
    width: int | None = None
    target: Image.Image | None = None
    colour: tuple[int, int, int] | None = None
    kind: str = "filled"


def load_probes(source: str, size: int) -> list[Probe]:
    """The probes `source` names: a shipped set (SETS; `size`: the side of the shape world's images) or a file."""
    if source == "shapes":
        return shape_probes(size)
    if source == "generic":
        return [Probe(prompt) for prompt in GENERIC]
    return read_probe_file(Path(source))


def shape_probes(size: int, count: int = PROBES_PER_SET) -> list[Probe]:
    """Family A of the shape world, one query per task in turn, with the fewest in-context examples each task
    takes (the same draw for every run: SHAPES_SEED)."""
    rng = np.random.default_rng(SHAPES_SEED)
    tasks = task_names("A")
    probes = []
    for i in range(count):
        task = TASKS[tasks[i % len(tasks)]]
        sample = make_sample(task, rng, size, n_examples=task.min_examples)
        probes.append(Probe(sample.instruction, sample.images, size, size, sample.target, sample.colour, sample.kind))
    return probes


def read_probe_file(path: Path) -> list[Probe]:
    what = "retention.probes"
    text = read_user_text(path, what, f"a probe file (.yaml or .jsonl), or one of {', '.join(SETS)}")
    if path.suffix == ".jsonl":
        items = []
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    items.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise UserError(f"{what} {path}: line {n} is not JSON ({exc.msg})") from None
    elif path.suffix in (".yaml", ".yml"):
        try:
            items = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise UserError(f"{what} {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    else:
        raise UserError(f"{what} {path}: a probe file is .yaml, .yml or .jsonl")
    if not isinstance(items, list) or not items:
        raise UserError(f"{what} {path} must hold a non-empty list of probes")
    return [_probe(item, f"{what} {path}: probe {i}", path.parent) for i, item in enumerate(items)]


def _probe(item, where: str, folder: Path) -> Probe:
    if not isinstance(item, dict) or not isinstance(item.get("prompt"), str):
        raise UserError(f"{where} must be a mapping with a prompt (str), got {item!r}"[:300])
    if unknown := sorted(set(item) - KEYS):
        raise UserError(f"{where} has unknown keys {unknown}; allowed: {', '.join(sorted(KEYS))}")
    paths = item.get("images", [])
    if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
        raise UserError(f"{where}: images must be a list of paths")
    images = [load_image(_near(p, folder)) for p in paths]
    try:
        check_tags(tag_numbers(item["prompt"]), len(images))
    except UserError as exc:
        raise UserError(f"{where}: {exc}") from None
    for key in ("height", "width"):
        value = item.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 16 or value % 16):
            raise UserError(f"{where}: {key} must be a multiple of 16 (>= 16), got {value!r}")
    target = load_image(_near(item["target"], folder)) if isinstance(item.get("target"), str) else None
    if "target" in item and target is None:
        raise UserError(f"{where}: target must be a path")
    colour = item.get("colour")
    if colour is not None and not (isinstance(colour, list) and len(colour) == 3
                                   and all(isinstance(c, int) and 0 <= c <= 255 for c in colour)):
        raise UserError(f"{where}: colour must be [r, g, b] with integers 0..255, got {colour!r}")
    if colour is not None and target is None:
        raise UserError(f"{where}: colour is the target's: give a target too")
    kind = item.get("kind", "filled")
    if kind not in KINDS:
        raise UserError(f"{where}: kind is {kind!r}; allowed: {', '.join(KINDS)}")
    return Probe(item["prompt"], images, item.get("height"), item.get("width"), target,
                 tuple(colour) if colour else None, kind)


def _near(path: str, folder: Path) -> Path:
    """A probe's relative path is read from the probe file's folder."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else folder / p
