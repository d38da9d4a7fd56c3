"""`build-visualcloze`: Graph200K / VisualCloze -> in-context instruction shards.

Each sample is a query row of one task variant plus 0-2 in-context example rows (rows drawn with probabilities
--rows-probs for 1/2/3 rows, default 0.3/0.4/0.3 as VisualCloze trains). As VisualCloze trains, the condition
cells are shown in one random order shared by all rows (--shuffle-conditions) and, with probability
--random-target-prob, the query's target is a random condition cell instead of the output ("reverse" tasks, task
suffix `_reverse`). Every random choice comes from numpy Generators seeded with (--seed, sample index), so builds
are reproducible and independent of --workers.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from omnideft.data.format.writer import BuiltSample, InputImage
from omnideft.errors import UserError

from .cli_common import SampleMaker, SourceBuilder, add_common_args, fingerprint_tree, key_for, run_main
from .degradations import degrade
from .graph200k import MAX_VARIANTS, open_rows
from .images import SkipSample, apply_mask, decode_image, square_resize
from .visualcloze_tasks import (
    LOSSLESS_CELLS,
    VARIANTS,
    Variant,
    column_for,
    content_caption,
    content_text,
    grid_layout,
    interleaved_layout,
    reverse_task,
    select_families,
    task_text,
)

QUERY_ATTEMPTS = 8        # rows tried (deterministically) when the planned query lacks an image of the task
CONTEXT_ATTEMPTS = 16     # random rows tried per in-context example
ROW_STRIDE = 7919         # prime step between query attempts, so retries spread over the dataset
MIN_OBJECT_CONSISTENCY = 3  # VisualCloze's filter for tasks that use the reference image


@dataclass(frozen=True)
class VisualClozeJob:
    query_row: int
    variant: int  # index into VARIANTS
    rows: int     # rows including the query (1..3)
    order: tuple[int, ...]  # indices into the variant's cells in display order; the output (last) stays last
    target: int   # position in `order` of the query cell to produce (len(order) - 1 unless reversed)

    @property
    def reverse(self) -> bool:
        return self.target != len(self.order) - 1


class VisualClozeBuilder(SourceBuilder):
    name = "visualcloze"

    def __init__(self, args: argparse.Namespace):
        super().__init__(args)
        try:
            self.families = select_families(args.tasks)
        except ValueError as exc:
            raise UserError(str(exc)) from None
        self.rows_probs = parse_probs(args.rows_probs)
        if not 0 <= args.random_target_prob <= 1:
            raise UserError(f"--random-target-prob {args.random_target_prob}: expected a probability in [0, 1]")
        self.source = open_rows(args.src, args.split)

    def fingerprint(self) -> str:
        origin = Path(self.source.origin)
        return fingerprint_tree(origin) if origin.exists() else f"hub:{self.source.origin}"

    def plan(self) -> list[VisualClozeJob]:
        n = len(self.source)
        if n == 0:
            raise UserError(f"--src {self.args.src}: the {self.args.split} split has no rows")
        order = np.random.default_rng(self.args.seed).permutation(n)
        families = list(self.families)
        total = self.args.max_samples or n
        jobs = []
        for index in range(total):
            rng = np.random.default_rng([self.args.seed, index])
            family = families[int(rng.integers(len(families)))]
            variants = self.families[family]
            variant = variants[int(rng.integers(len(variants)))]
            rows = 1 + int(rng.choice(3, p=self.rows_probs))
            cells, target = self.arrange(len(variant.cells), rng)
            jobs.append(VisualClozeJob(int(order[index % n]), VARIANTS.index(variant), rows, cells, target))
        return jobs

    def arrange(self, n: int, rng: np.random.Generator) -> tuple[tuple[int, ...], int]:
        """VisualCloze's steps 6 and 8: one order of the n-1 conditions for all rows, and the query's target cell.

        Drawn after the plan's other choices and only when enabled, so `--no-shuffle-conditions
        --random-target-prob 0` plans exactly what the builder did before these options existed.
        """
        conditions = list(range(n - 1))
        if self.args.shuffle_conditions:
            conditions = [int(i) for i in rng.permutation(n - 1)]
        target = n - 1
        if self.args.random_target_prob > 0 and rng.random() < self.args.random_target_prob:
            target = int(rng.integers(n - 1))
        return (*conditions, n - 1), target

    def job_id(self, job: VisualClozeJob) -> str:
        return str(job.query_row)

    def job_task(self, job: VisualClozeJob) -> str:
        task = VARIANTS[job.variant].task
        return reverse_task(task) if job.reverse else task

    def open(self) -> "VisualClozeMaker":
        return VisualClozeMaker(self.source, self.args)


def parse_probs(text: str) -> list[float]:
    try:
        probs = [float(x) for x in text.split(",")]
    except ValueError:
        raise UserError(f"--rows-probs {text!r}: expected three numbers like 0.3,0.4,0.3") from None
    if len(probs) != 3 or min(probs) < 0 or sum(probs) <= 0:
        raise UserError(f"--rows-probs {text!r}: expected three non-negative numbers for 1/2/3 rows")
    return [p / sum(probs) for p in probs]


class VisualClozeMaker(SampleMaker):
    def __init__(self, source, args: argparse.Namespace):
        self.source, self.args = source, args

    def make(self, index: int, job: VisualClozeJob) -> BuiltSample:
        variant = VARIANTS[job.variant]
        rng = np.random.default_rng([self.args.seed, index, 1])
        query, query_cells = self.find_query(job, variant, rng)
        rows = self.find_context(job, variant, query, rng) + [(query, query_cells)]
        grid = [[cells[i] for i in job.order] for _, cells in rows]  # every row in the sample's cell order
        names = tuple(variant.cells[i] for i in job.order)
        instruction, inputs, output, ext, caption = self.compose(grid, names, job.target, variant, rng,
                                                                 self.source.meta(query))
        task = reverse_task(variant.task) if job.reverse else variant.task
        return BuiltSample(
            key=key_for(VisualClozeBuilder.name, index), task=task, instruction=instruction, inputs=inputs,
            output=output, output_ext=ext, caption=caption, source={
                "dataset": "Graph200K", "split": self.args.split, "ids": [str(r) for r, _ in rows],
                "degradation": variant.degradation, "layout": self.args.layout},
            extra={"cells": {"order": list(names), "target": job.target}})

    def find_query(self, job: VisualClozeJob, variant: Variant, rng: np.random.Generator):
        n = len(self.source)
        for attempt in range(QUERY_ATTEMPTS):
            row = (job.query_row + attempt * ROW_STRIDE) % n
            cells = self.row_cells(row, variant, rng)
            if cells is not None:
                return row, cells
        raise SkipSample("missing", f"no row near {job.query_row} has the images of {variant.task}")

    def find_context(self, job: VisualClozeJob, variant: Variant, query: int, rng: np.random.Generator):
        n, used, rows = len(self.source), {query}, []
        for _ in range(job.rows - 1):
            for _attempt in range(CONTEXT_ATTEMPTS):
                row = int(rng.integers(n))
                if row in used:
                    continue
                try:  # a bad example row is replaced, not fatal: only the query's own images count as skips
                    cells = self.row_cells(row, variant, rng)
                except SkipSample:
                    cells = None
                if cells is not None:
                    used.add(row)
                    rows.append((row, cells))
                    break
            else:
                raise SkipSample("no_context", f"no in-context example found for {variant.task}")
        return rows

    def row_cells(self, row: int, variant: Variant, rng: np.random.Generator) -> list[Image.Image] | None:
        """The row's cells resized to the cell size, or None when the row lacks an image the task needs."""
        if "reference" in variant.cells and not passes_quality(self.source.meta(row)):
            return None
        k_style = self.pick_index(row, rng, lambda k: (f"{variant.style}_ref_{k}", f"{variant.style}_image_{k}"))
        k_fill = self.pick_index(row, rng, lambda k: (f"FillEdit_image_{k}",))
        decoded: dict[str, Image.Image] = {}
        cells = []
        for cell in variant.cells:
            columns = column_for(cell, variant.style, k_style, k_fill)
            for col in columns:
                if col not in decoded:
                    data = self.source.image(row, col)
                    if data is None:
                        return None
                    mode = "L" if col == "foreground" else "RGB"
                    decoded[col] = square_resize(decode_image(data, f"row {row} {col}", mode, self.args.max_pixels),
                                                 self.args.resolution)
            cells.append(self.derive(cell, [decoded[c] for c in columns], variant, rng))
        return cells

    def pick_index(self, row: int, rng: np.random.Generator, columns_of) -> int:
        """Pick one of the row's available style/FillEdit indices (random among those present)."""
        for k in rng.permutation(MAX_VARIANTS):
            if all(c in self.source.columns for c in columns_of(int(k))) and \
                    all(self.source.image(row, c) is not None for c in columns_of(int(k))):
                return int(k)
        return 0

    @staticmethod
    def derive(cell: str, images: list[Image.Image], variant: Variant, rng: np.random.Generator) -> Image.Image:
        if cell in ("foreground", "background"):
            return apply_mask(images[0], images[1], keep_foreground=cell == "foreground")
        if cell == "degraded":
            return degrade(images[0], variant.degradation, rng)
        return images[0]

    def compose(self, grid: list[list[Image.Image]], names: tuple[str, ...], target: int, variant: Variant,
                rng: np.random.Generator, meta: dict):
        """Instruction, inputs, output, its extension and the caption (the content text when known). `grid` rows and
        `names` are in display order; query cell `target` is the one to produce. Interleaved rows list their other
        cells in order, then the target cell. The task sentence is dropped (--task-dropout) only when in-context
        rows show the task: a lone query row without it would not say what to do."""
        rows, cols = len(grid), len(names)
        produced = names[:target] + names[target + 1:] + (names[target],)  # conditions as shown, then the target
        parts = []
        if rng.random() >= self.args.task_dropout or rows == 1:
            parts.append(task_text(variant, produced))
        produces_target = names[target] == "target"
        content = content_text(meta, last=target == cols - 1) if produces_target else None
        caption = content_caption(meta) if produces_target else None  # kept even when the sentence is dropped
        if content and rng.random() >= self.args.content_dropout:
            parts.append(content)
        if self.args.layout == "grid":
            full = paste_grid(grid)
            query = list(grid[-1])
            query[target] = Image.new("RGB", query[target].size)
            text = " ".join([grid_layout(rows, cols, target)] + parts)
            return text, [InputImage(paste_grid(grid[:-1] + [query]), "grid_query", "png")], full, "png", caption
        exts = ["png" if c in LOSSLESS_CELLS else "jpg" for c in produced]
        grid = [cells[:target] + cells[target + 1:] + [cells[target]] for cells in grid]
        inputs = []
        for r, cells in enumerate(grid):
            last = r == rows - 1
            for c, img in enumerate(cells[:-1] if last else cells):
                role = "query_condition" if last else ("example_output" if c == cols - 1 else "example_condition")
                inputs.append(InputImage(img, role, exts[c]))
        text = " ".join([interleaved_layout(rows, cols)] + parts)
        return text, inputs, grid[-1][-1], exts[-1], caption


def passes_quality(meta: dict) -> bool:
    qa = meta.get("quality_assessment") or {}
    score = qa.get("objectConsistency") if isinstance(qa, dict) else None
    return score is None or score >= MIN_OBJECT_CONSISTENCY


def paste_grid(grid: list[list[Image.Image]]) -> Image.Image:
    w, h = grid[0][0].size
    canvas = Image.new("RGB", (w * len(grid[0]), h * len(grid)))
    for r, cells in enumerate(grid):
        for c, img in enumerate(cells):
            canvas.paste(img.convert("RGB"), (c * w, r * h))
    return canvas


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="build-visualcloze", description=__doc__.splitlines()[0])
    p.add_argument("--src", required=True, help="Graph200K save_to_disk dir, VisualCloze data.json tree, or hub id")
    p.add_argument("--tasks", default=None, help="comma list of families or family/variant (default: all 12)")
    p.add_argument("--layout", choices=("interleaved", "grid"), default="interleaved",
                   help="interleaved: one <|image_k|> per cell (default); grid: one grid image, target = full grid")
    p.add_argument("--rows-probs", default="0.3,0.4,0.3",
                   help="probabilities of 1/2/3 rows including the query, i.e. 0/1/2 in-context examples")
    p.add_argument("--task-dropout", type=float, default=0.2, help="probability of leaving out the task sentence")
    p.add_argument("--content-dropout", type=float, default=0.2,
                   help="probability of leaving out the content caption (only used when the image to produce is "
                        "the target)")
    p.add_argument("--shuffle-conditions", action=argparse.BooleanOptionalAction, default=True,
                   help="show the condition cells in one random order shared by all rows of a sample, the output "
                        "cell last (VisualCloze's training; default on)")
    p.add_argument("--random-target-prob", type=float, default=0.5,
                   help="probability that the query's target is a random condition cell instead of the output "
                        "(reverse tasks, task suffix _reverse; default 0.5 as VisualCloze trains; 0 = always last)")
    add_common_args(p, resolution=512)
    return p


def main(argv: list[str] | None = None) -> int:
    return run_main(make_parser, VisualClozeBuilder, argv)


if __name__ == "__main__":
    sys.exit(main())
