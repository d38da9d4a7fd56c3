"""An adaptation study on the shape world: teach the `small` base new tasks (family B) with an adapter and measure
what it learned and what it kept of the tasks it knew (family A). The demo runs one study; benchmarks/retention.py
runs many (methods x seeds x lengths) on the same data.

Everything is fixed by the seed: training shards, held-out queries, generation noise. Every model answers the same
queries with the same noise, and its held-out denoising loss uses the same samples, noise and timesteps.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image

from omnideft.eval.denoising import denoising_losses, load_examples
from omnideft.eval.retention import RetentionGauge
from omnideft.families.family import TrainingSettings
from omnideft.families.registry import resolve_family
from omnideft.shapes import task_names
from omnideft.shapes.score import heldout_samples, sampler_fn, score
from omnideft.shapes.shards import write_task_shards
from omnideft.train.loop import train
from omnideft.train.recipe import load_recipe

SIZE = 64
BASE = "small"


@dataclass
class Scores:
    fit: dict  # family B: {"iou", "colour_error", "denoising_loss", "per_task": {...}}
    kept: dict  # family A: the same keys
    images: dict = field(default_factory=dict, repr=False)  # {"B": [...], "A": [...]} in query order


@dataclass
class AdaptationStudy:
    root: Path
    seed: int = 0
    train_samples: int = 256
    queries: int = 16  # held-out queries per new task
    retention_queries: int = 4  # held-out queries per known task
    denoising_samples: int = 32  # held-out shard samples per family for the denoising loss
    sampler_steps: int = 20
    # grow: the base copies the query (IoU ~0.5) and a rank-8 adapter learns it in ~400 steps (IoU ~0.86); flip
    # needs far more than a CPU minute (IoU 0.14 -> 0.28 after 150 steps), fill_like's shapes the base already draws
    new_tasks: list[str] = field(default_factory=lambda: ["grow"])
    known_tasks: list[str] = field(default_factory=lambda: task_names("A"))
    replay: float = 0.0  # share of training samples drawn from the known tasks (prior preservation)

    def __post_init__(self):
        self.root = Path(self.root)
        self.fit_queries = heldout_samples(self.new_tasks, self.queries, seed=self.seed + 100, size=SIZE)
        self.kept_queries = heldout_samples(self.known_tasks, self.retention_queries, seed=self.seed + 200, size=SIZE)

    def write_shards(self) -> Path:
        """Training shards of the new tasks (and, with `replay`, of the known ones), and held-out shards of both
        families (for the denoising loss)."""
        write_task_shards(self.root / "heldout_b", self.new_tasks, self.denoising_samples, SIZE, seed=self.seed + 1)
        write_task_shards(self.root / "heldout_a", self.known_tasks, self.denoising_samples, SIZE, seed=self.seed + 2)
        if self.replay:
            write_task_shards(self.root / "replay_a", self.known_tasks, self.train_samples, SIZE, seed=self.seed + 3)
        return write_task_shards(self.root / "shards", self.new_tasks, self.train_samples, SIZE, seed=self.seed)

    def _shards(self) -> str:
        new = str(self.root / "shards" / "train")
        if not self.replay:
            return f"[{new}]"
        known = str(self.root / "replay_a" / "train")
        return f"[{{path: {new}, weight: {1 - self.replay}}}, {{path: {known}, weight: {self.replay}}}]"

    def train(self, out: Path, overrides: list[str], steps: int, seed: int | None = None, progress: bool = False,
              checkpoint_every: int = 0) -> Path:
        """Train an adapter on the new tasks (recipe keys in `overrides` choose method, rank, lr...); returns
        the run folder (adapter/ and, with `checkpoint_every`, checkpoints/step-N/ adapters). A run already in
        `out` is replaced: the study rewrites its shards and retrains on every call."""
        recipe = load_recipe(None, [
            f"model.name={BASE}", f"data.shards={self._shards()}", f"data.max_image_size={SIZE}",
            "data.condition_dropout=0.1", f"train.max_steps={steps}", "train.batch_size=8",
            f"train.seed={self.seed if seed is None else seed}", f"train.checkpoint_every={checkpoint_every}",
            "train.keep_checkpoints=0", "output.tensorboard=false", f"output.dir={out}", *overrides])
        gauge = RetentionGauge(recipe) if recipe.retention.enabled else None  # the forgetting gauge (retention.*)
        train(recipe, progress=progress, overwrite=True, gauge=gauge)
        return Path(out)

    def train_together(self, runs: dict[Path, list[str]], steps: int, progress: bool = False) -> None:
        """`train` each run (out folder -> overrides) at the same time, one process each, the CPU threads split
        between them; the progress bar is the first run's. Why: the small model's step is too small to use two
        cores well: the demo's two 300-step runs took 153 s one after the other on 2 cores (0.24 s a step at 2
        threads) and 112 s side by side at 1 thread each (both with the shards written first)."""
        (first, overrides), *rest = runs.items()
        threads = max(1, torch.get_num_threads() // len(runs))
        before = torch.get_num_threads()
        context = multiprocessing.get_context("spawn")  # a fresh interpreter: no forked torch thread pools
        with ProcessPoolExecutor(max(1, len(rest)), mp_context=context, initializer=torch.set_num_threads,
                                 initargs=(threads,)) as pool:
            others = [pool.submit(self.train, out, more, steps) for out, more in rest]
            torch.set_num_threads(threads)
            try:
                self.train(first, overrides, steps, progress=progress)
            finally:
                torch.set_num_threads(before)
            for run in others:
                run.result()  # a run's error is raised here, as `train` raised it

    def score(self, adapter: Path | None, progress: bool = False) -> Scores:
        """Base (adapter None) or base + adapter on the held-out queries and samples of both families."""
        base_family = resolve_family(BASE)
        # merge=False: the adapter's layers kept beside the base, as load_adapter puts them (the denoising loss too)
        generator = base_family.generator(base_family.load(BASE), device="cpu", merge=False)
        generator.set_adapters([Path(adapter)] if adapter else [])

        def sampler(*args, **settings):
            return generator(*args, max_input_image_size=SIZE, **settings)[0]

        generate = sampler_fn(sampler, SIZE, steps=self.sampler_steps, seed=self.seed)
        label = "base" if adapter is None else Path(adapter).parent.name
        fit, fit_images = score(generate, self.fit_queries, f"{label}: new tasks", progress)
        kept, kept_images = score(generate, self.kept_queries, f"{label}: known tasks", progress)
        comps = generator.components
        loss = {family: self._denoising_loss(comps.transformer, comps, family) for family in ("b", "a")}
        return Scores(_summary(fit, loss["b"]), _summary(kept, loss["a"]), {"B": fit_images, "A": kept_images})

    def denoising_loss(self, adapter: Path | None, family: str = "b") -> float:
        """Only the held-out denoising loss on family `family` ("b": new tasks, "a": known): seconds, no sampling
        (the retention benchmark's learning-rate sweep)."""
        training = resolve_family(BASE).training_backend(TrainingSettings(BASE, max_image_size=SIZE))
        comps = training.load("cpu")
        model = training.load_adapter(comps, adapter)[0] if adapter else comps.transformer
        return self._denoising_loss(model, comps, family)

    def _denoising_loss(self, model, comps, family: str) -> float:
        examples = load_examples([str(self.root / f"heldout_{family}" / "train")], self.denoising_samples)
        training = resolve_family(BASE).training_backend(TrainingSettings(BASE, max_image_size=SIZE))
        return denoising_losses({"m": model}, training, comps, examples)["m"]["all"]


def _summary(table: dict, denoising_loss: float) -> dict:
    return {"iou": table["mean"]["iou"], "colour_error": table["mean"]["colour_error"],
            "denoising_loss": denoising_loss, "per_task": {t: v for t, v in table.items() if t != "mean"}}


def pick_rows(samples: list, per_task: int) -> list[int]:
    """Indices of the first `per_task` samples of each task, tasks in order of appearance."""
    picks: list[int] = []
    for task in dict.fromkeys(s.task for s in samples):
        picks += [i for i, s in enumerate(samples) if s.task == task][:per_task]
    return picks


def rows(images: list[Image.Image], picks: list[int]) -> list[Image.Image]:
    return [images[i] for i in picks]
