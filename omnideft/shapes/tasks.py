"""The in-context tasks of the shape world, in two families.

Family A is what the small base OmniGen was pretrained on; family B is new to it (what adapters are taught in the
demo and the retention benchmark): `grow` (the demo's) makes the query's shape 1.6 times larger in place, a
transform family A never shows under words it never read (its text names the shape's colour, as `draw`, `fill` and
`recolour` do: without it the base paints every `grow` answer blue and the adapter spends its steps on colour);
`fill_like` combines two things the base can do (fill an edge map; take a colour from the examples' outputs, which
`recolour_like` needs) under an instruction it never saw;
`flip` is a transform the base never saw at all. Each task turns random scenes into (query text, query images,
target image); a sample prepends 0-2 example pairs of the same task in OmniGen's interleaved format:

    example 1: <img><|image_1|></img> becomes <img><|image_2|></img>. fill the edges <img><|image_3|></img> with red.

The target's colour and mask kind ride along so generated images can be scored (metrics.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from PIL import Image

from omnideft.prompts.in_context import compose_in_context
from omnideft.shapes.scene import COLOURS, SHAPES, Scene, outline, render, sample_scene

QUERY = "<img><|image_1|></img>"
ROWS = {"top": 0.28, "middle": 0.5, "bottom": 0.72}
COLUMNS = {"left": 0.28, "centre": 0.5, "right": 0.72}


@dataclass
class TaskDraw:
    """One (query, target) of a task: `text` refers to its images as <|image_1|>..."""

    text: str
    images: list[Image.Image]
    target: Image.Image
    colour: tuple[int, int, int]  # RGB the target's shape is painted in
    kind: str = "filled"  # how to read the target's mask: "filled" shape or "edges"


@dataclass(frozen=True)
class ShapeTask:
    name: str
    family: str  # "A": the small base knows it; "B": new to it
    summary: str
    draw: Callable[[np.random.Generator, int, dict], TaskDraw]
    min_examples: int = 0
    max_examples: int = 2
    shared: Callable[[np.random.Generator], dict] = field(default=lambda rng: {})  # drawn once per sample


def _colour(rng) -> str:
    return list(COLOURS)[int(rng.integers(len(COLOURS)))]


def _draw(rng, size, shared):
    row, col = list(ROWS)[int(rng.integers(3))], list(COLUMNS)[int(rng.integers(3))]
    s = sample_scene(rng, centre=(COLUMNS[col], ROWS[row]), radius=(0.16, 0.2))
    where = "in the middle" if (row, col) == ("middle", "centre") else f"at the {row} {col}"
    return TaskDraw(f"draw a {s.colour} {s.shape} {where}.", [], render(s, size), COLOURS[s.colour])


def _fill(rng, size, shared):
    s = sample_scene(rng)
    img = render(s, size)
    return TaskDraw(f"fill the edges {QUERY} with {s.colour}.", [outline(img)], img, COLOURS[s.colour])


def _edges(rng, size, shared):
    s = sample_scene(rng)
    img = render(s, size)
    return TaskDraw(f"draw the edges of {QUERY}.", [img], outline(img), (255, 255, 255), kind="edges")


def _recolour(rng, size, shared):
    s = sample_scene(rng)
    new = _colour(rng)
    while new == s.colour:
        new = _colour(rng)
    return TaskDraw(f"paint the shape in {QUERY} {new}.", [render(s, size)], render(s.with_colour(new), size),
                    COLOURS[new])


def _transform(text: str, op: int):
    def draw(rng, size, shared):
        s = sample_scene(rng)
        img = render(s, size)
        return TaskDraw(text, [img], img.transpose(op), COLOURS[s.colour])
    return draw


def _recolour_like(rng, size, shared):
    s = sample_scene(rng)
    while s.colour == shared["colour"]:
        s = sample_scene(rng)
    return TaskDraw(f"paint the shape in {QUERY} like the examples.", [render(s, size)],
                    render(s.with_colour(shared["colour"]), size), COLOURS[shared["colour"]])


def _fill_like(rng, size, shared):
    s = sample_scene(rng, colour=shared["colour"])
    img = render(s, size)
    return TaskDraw(f"fill the edges {QUERY} like the examples.", [outline(img)], img, COLOURS[s.colour])


def _grow(rng, size, shared):
    small = sample_scene(rng, radius=(0.11, 0.15))
    r = small.r * 1.6
    cx, cy = (float(np.clip(c, r + 0.03, 1 - r - 0.03)) for c in (small.cx, small.cy))
    small = Scene(small.shape, small.colour, cx, cy, small.r)
    return TaskDraw(f"make the {small.colour} shape in {QUERY} big.", [render(small, size)],
                    render(Scene(small.shape, small.colour, cx, cy, r), size), COLOURS[small.colour])


TASKS: dict[str, ShapeTask] = {t.name: t for t in (
    ShapeTask("draw", "A", "text -> the named shape and colour at one of 9 named places", _draw, max_examples=0),
    ShapeTask("fill", "A", "edge map -> the filled shape in the colour named in the text", _fill),
    ShapeTask("edges", "A", "filled shape -> its edge map", _edges),
    ShapeTask("recolour", "A", "shape -> the same shape in the colour named in the text", _recolour),
    ShapeTask("mirror", "A", "shape -> mirrored left to right", _transform(f"mirror {QUERY} from left to right.",
                                                                            Image.Transpose.FLIP_LEFT_RIGHT)),
    ShapeTask("rotate", "A", "shape -> rotated a quarter turn anticlockwise",
              _transform(f"rotate {QUERY} by a quarter turn.", Image.Transpose.ROTATE_90)),
    ShapeTask("recolour_like", "A", "shape -> the same shape in the colour of the examples' outputs (named nowhere)",
              _recolour_like, min_examples=1, shared=lambda rng: {"colour": _colour(rng)}),
    ShapeTask("flip", "B", "shape -> flipped upside down (a transform family A never shows)",
              _transform(f"flip {QUERY} upside down.", Image.Transpose.FLIP_TOP_BOTTOM)),
    ShapeTask("grow", "B", "shape -> the same shape, colour and centre, 1.6 x larger", _grow),
    ShapeTask("fill_like", "B", "edge map -> filled in the colour of the examples' outputs (named nowhere)",
              _fill_like, min_examples=1, shared=lambda rng: {"colour": _colour(rng)}),
)}
FAMILIES = ("A", "B")
# Every word the task texts and the in-context sentence use (the small preset's tokenizer knows each one).
VOCABULARY = (*COLOURS, *SHAPES, *(w for name in (*ROWS, *COLUMNS) for w in name.split()),
              "draw", "a", "at", "the", "in", "fill", "edges", "with", "of", "paint", "shape", "mirror", "from", "to",
              "rotate", "by", "quarter", "turn", "flip", "upside", "down", "make", "big", "like", "examples", "example",
              "becomes",
              ">.", ".<|", ">.<|")  # punctuation runs where a sentence ends at an image tag or at `<|end|>`


def task_names(family: str) -> list[str]:
    return [name for name, t in TASKS.items() if t.family == family]


@dataclass
class ShapeSample:
    task: str
    instruction: str
    images: list[Image.Image]  # example pairs first, then the query's images
    target: Image.Image
    colour: tuple[int, int, int]
    kind: str
    n_examples: int
    examples: list[tuple[Image.Image, Image.Image]]
    query_text: str
    query_images: list[Image.Image]


def make_sample(task: str | ShapeTask, rng: np.random.Generator, size: int = 64,
                n_examples: int | None = None) -> ShapeSample:
    """One sample of `task`; `n_examples` defaults to a uniform draw in the task's [min, max]."""
    t = TASKS[task] if isinstance(task, str) else task
    if n_examples is None:
        n_examples = int(rng.integers(t.min_examples, t.max_examples + 1))
    shared = t.shared(rng)
    pairs = []
    for _ in range(n_examples):
        ex = t.draw(rng, size, shared)
        pairs.append((ex.images[0], ex.target))
    q = t.draw(rng, size, shared)
    instruction, images = compose_in_context(q.text, q.images, pairs)
    return ShapeSample(t.name, instruction, images, q.target, q.colour, q.kind, n_examples, pairs, q.text, q.images)
