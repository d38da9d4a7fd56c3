"""`omnideft eval`: held-out denoising loss per task for the base and each adapter; tables in CSV/JSON/Markdown.
The loss is the base's model family's training loss (families/<name>/training.py), so the same command measures a run
of any family."""

from __future__ import annotations

from pathlib import Path

from omnideft.adapters.folder import read_adapter_meta
from omnideft.eval.denoising import denoising_losses, load_examples
from omnideft.eval.report import write_tables
from omnideft.families.family import TrainingSettings
from omnideft.families.registry import AUTO, resolve_family
from omnideft.files import check_output_folder


def run_eval(model: str, adapters: list[str], shards: list[str], out: str, samples: int = 64,
             max_image_size: int = 1024, repeats: int = 2, family: str = AUTO) -> tuple[dict, list[Path]]:
    """`family`: the model's (auto: read from the folder, or the first adapter's record for a preset)."""
    check_output_folder(Path(out).parent, replace=True)  # OUT.csv/.json/.md go in beside what it holds; checked first
    recorded = read_adapter_meta(adapters[0]).get("base", {}).get("family") if adapters else None
    training = resolve_family(model, family, recorded).training_backend(
        TrainingSettings(model, max_image_size=max_image_size))
    examples = load_examples(shards, samples)
    comps = training.load("cpu")
    results = denoising_losses({"base": comps.transformer}, training, comps, examples, repeats=repeats)
    for path in adapters:
        fresh = training.load("cpu")  # each adapter on its own untouched base
        adapted, camera = training.load_adapter(fresh, path)
        results.update(denoising_losses({path: adapted}, training, fresh, examples, repeats=repeats, camera=camera))
    return results, write_tables(results, out, "held-out denoising loss (the family's training loss, MSE)")
