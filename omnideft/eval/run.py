"""`omnideft eval`: held-out denoising loss per task for the base and each adapter; tables in CSV/JSON/Markdown."""

from __future__ import annotations

from pathlib import Path

from omnideft.adapters import load_adapter
from omnideft.camera.conditioning import load_camera
from omnideft.eval.denoising import denoising_losses, load_examples
from omnideft.eval.report import write_tables
from omnideft.files import check_output_folder
from omnideft.model import load_omnigen


def run_eval(model: str, adapters: list[str], shards: list[str], out: str, samples: int = 64,
             max_image_size: int = 1024, repeats: int = 2) -> tuple[dict, list[Path]]:
    check_output_folder(Path(out).parent, replace=True)  # OUT.csv/.json/.md go in beside what it holds; checked first
    examples = load_examples(shards, samples)
    comps = load_omnigen(model)
    models = {"base": comps.transformer}
    results = denoising_losses(models, comps.vae, comps.tokenizer, examples, max_image_size, repeats=repeats)
    for path in adapters:
        fresh = load_omnigen(model)  # each adapter on its own untouched base
        camera = load_camera(fresh.transformer, fresh.tokenizer, path)  # before the adapter: it may grow the table
        adapted = load_adapter(fresh.transformer, path)
        results.update(denoising_losses({path: adapted}, comps.vae, fresh.tokenizer, examples, max_image_size,
                                        repeats=repeats, camera=camera.prompt if camera else None))
    return results, write_tables(results, out, "held-out denoising loss (rectified flow MSE)")
