"""Benchmark: what bounds the `small` base's held-out scores, its VAE or its transformer (and its sampler settings)?

Scores on held-out queries of family A (the pretraining tasks) and B (the demo's new tasks), with the metric code of
the model card (omnideft/shapes/score.py, the card's query seed):
- vae: each true target encoded and decoded by the model's VAE: the best any transformer on that VAE can score;
- model: the model's own answers (the card's heldout.json) at each sampler setting of SETTINGS (steps, text
  guidance, image guidance), so whether the sampler matters shows beside the VAE's bound.

    python benchmarks/small_base_bounds.py [MODEL_FOLDER] [--queries N] [--vae-only]

MODEL_FOLDER: a folder `omnideft pretrain` wrote (default: the shipped `small`). The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from omnideft.families.omnigen.model import load_omnigen  # noqa: E402
from omnideft.families.omnigen.pretrain.heldout import reconstruction_fn  # noqa: E402
from omnideft.families.omnigen.sampler import OmniGenSampler  # noqa: E402
from omnideft.shapes import task_names  # noqa: E402
from omnideft.shapes.score import heldout_samples, sampler_fn, score  # noqa: E402

SIZE = 64
SEEDS = {"A": 1000, "B": 100}  # A: the card's held-out seed (recipe heldout.seed); B: the demo's (study seed + 100)
SETTINGS = [(20, 2.5, 1.6), (50, 2.5, 1.6), (10, 2.5, 1.6), (20, 1.5, 1.2), (20, 4.0, 2.0)]  # the card's first


def summary(table: dict) -> dict:
    tasks = {t: v for t, v in table.items() if t != "mean"}
    return {"iou": round(table["mean"]["iou"], 3), "colour_error": round(table["mean"]["colour_error"], 1),
            "min_task_iou": round(min(v["iou"] for v in tasks.values()), 3),
            "per_task": {t: [round(v["iou"], 3), round(v["colour_error"], 1)] for t, v in tasks.items()}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", nargs="?", default="small")
    p.add_argument("--queries", type=int, default=16, help="held-out queries per task (the card uses 16)")
    p.add_argument("--vae-only", action="store_true", help="only the VAE's reconstruction bound (seconds)")
    args = p.parse_args()
    torch.set_num_threads(1)
    comps = load_omnigen(args.model)
    queries = {fam: heldout_samples(task_names(fam), args.queries, seed, SIZE) for fam, seed in SEEDS.items()}
    result: dict = {"model": args.model, "queries_per_task": args.queries}
    result["vae"] = {fam: summary(score(reconstruction_fn(comps.vae), qs)[0]) for fam, qs in queries.items()}
    print(f"vae reconstruction: {json.dumps({f: (r['iou'], r['colour_error']) for f, r in result['vae'].items()})}",
          flush=True)
    if not args.vae_only:
        sampler = OmniGenSampler(comps.transformer, comps.vae, comps.tokenizer, comps.scheduler,
                                 max_input_image_size=SIZE)
        result["model"] = []
        for steps, guidance, image_guidance in SETTINGS:
            t0 = time.perf_counter()
            generate = sampler_fn(sampler, SIZE, steps, guidance, image_guidance)
            row = {"steps": steps, "guidance": guidance, "image_guidance": image_guidance,
                   "A": summary(score(generate, queries["A"])[0])}
            row["seconds_per_query"] = round((time.perf_counter() - t0) / len(queries["A"]), 3)
            result["model"].append(row)
            print(f"model steps {steps} guidance {guidance}/{image_guidance}: A IoU {row['A']['iou']} colour "
                  f"{row['A']['colour_error']} ({row['seconds_per_query']} s/query)", flush=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
