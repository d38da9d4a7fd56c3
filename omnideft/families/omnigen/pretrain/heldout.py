"""The small base's held-out task metrics (its model card): generate held-out queries of the pretraining tasks and
score them with exact masks (omnideft/shapes/score.py); writes heldout.json and heldout.png beside the weights."""

from __future__ import annotations

import json
from pathlib import Path

from omnideft.families.omnigen.model import load_omnigen
from omnideft.families.omnigen.sampler import OmniGenSampler
from omnideft.files import write_text_atomic
from omnideft.images import save_image_atomic
from omnideft.shapes.score import comparison_sheet, heldout_samples, sampler_fn, score


def write_heldout_scores(folder: Path, tasks: list[str], per_task: int, seed: int, size: int, steps: int,
                         guidance: float, image_guidance: float, progress: bool = False) -> dict:
    """Score the model in `folder` on held-out queries of `tasks`; writes heldout.json and heldout.png there."""
    comps = load_omnigen(str(folder))
    sampler = OmniGenSampler(comps.transformer, comps.vae, comps.tokenizer, comps.scheduler, max_input_image_size=size)
    samples = heldout_samples(tasks, per_task, seed, size)
    table, images = score(sampler_fn(sampler, size, steps, guidance, image_guidance), samples, "held-out", progress)
    record = {"tasks": table, "queries_per_task": per_task, "seed": seed, "sampler_steps": steps,
              "guidance": guidance, "image_guidance": image_guidance}
    write_text_atomic(Path(folder) / "heldout.json", json.dumps(record, indent=2) + "\n")
    picks = [i for t in tasks for i in [j for j, s in enumerate(samples) if s.task == t][:2]]
    save_image_atomic(comparison_sheet([samples[i] for i in picks], {"generated": [images[i] for i in picks]}),
                      Path(folder) / "heldout.png")
    return table
