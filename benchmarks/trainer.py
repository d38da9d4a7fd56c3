"""Benchmark: step time of the trainer against a bare forward/backward/AdamW loop, and its data stall.

Model: a random OmniGen (hidden 256, 3 layers, real architecture) saved in diffusers layout; DEFT rank 16 (QR) on
every linear layer; batches of 2 in-context samples at 128 px (3 input images + the output) from synthetic shards.

- trainer: `omnideft.train.loop.train` on a recipe; per-step `step_s` and `data_s` are read from its
  metrics.jsonl (what the trainer itself records), the first WARMUP steps of each run are discarded.
- bare: the same base, adapter (`apply_adapter`), AdamW groups, clipping and loss on the same batches, built once
  beforehand from the same shards with the same BatchBuilder; per step only VAE encode + forward + backward +
  clip + step + zero_grad. Whatever the trainer adds on top is overhead (data waiting, logging, bookkeeping).

Runs alternate trainer, bare, trainer, bare ... (ROUNDS each) to cancel machine drift. `trainer_vs_bare` is the
median over rounds of (trainer median step / bare median step of the same round), so a busy spell hits both
sides of a ratio; pooled medians are printed too. Last line: one JSON object with `trainer_vs_bare` (goal <= 1.10)
and `data_stall_fraction` (sum of data_s over sum of step_s; goal < 0.05). No arguments; about two minutes on 2
idle cores (much longer when other jobs share them: see loadavg_1m_before).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

HIDDEN, HEADS, LAYERS, MLP = 256, 4, 3, 1024
IMAGE = 128
BATCH = 2
RANK = 16
WARMUP = 3
MEASURED = 25
ROUNDS = 5
SEED = 0


def make_base(folder: Path) -> Path:
    """The tiny preset's architecture at benchmark width, random weights, saved like a real base."""
    from diffusers import OmniGenTransformer2DModel

    from omnideft.families.omnigen.model import load_omnigen, save_base
    from omnideft.families.omnigen.model.tiny import tiny_transformer_config

    comps = load_omnigen("tiny", seed=SEED)
    cfg = tiny_transformer_config()
    head_dim = HIDDEN // HEADS
    factors = [1.0 + i / (head_dim // 2) for i in range(head_dim // 2)]
    cfg.update(hidden_size=HIDDEN, num_attention_heads=HEADS, num_key_value_heads=HEADS, intermediate_size=MLP,
               num_layers=LAYERS, rope_scaling={"short_factor": factors, "long_factor": factors})
    torch.manual_seed(SEED)
    comps.transformer = OmniGenTransformer2DModel(**cfg)
    save_base(comps, folder)
    return folder


def recipe_overrides(base: Path, shards: Path, out: Path, steps: int) -> list[str]:
    return [f"model.name={base}", f"data.shards=[{shards}]", f"data.max_image_size={IMAGE}",
            "data.condition_dropout=0.01", "adapter.method=deft", f"adapter.rank={RANK}", "adapter.projector=qr",
            "adapter.targets=all-linear", f"train.max_steps={steps}", f"train.batch_size={BATCH}", "train.lr=1e-3",
            "train.grad_clip=1.0", f"train.seed={SEED}", "train.checkpoint_every=0", "train.log_every=0",
            f"output.dir={out}"]


def run_trainer(base: Path, shards: Path, out: Path) -> tuple[list[float], list[float]]:
    from omnideft.train.loop import train
    from omnideft.train.recipe import load_recipe

    train(load_recipe(None, recipe_overrides(base, shards, out, WARMUP + MEASURED)), progress=False)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if r["step"] > WARMUP]
    return [r["step_s"] for r in rows], [r["data_s"] for r in rows]


def bare_batches(base: Path, shards: Path, n: int) -> list[dict]:
    """The batches the trainer's data path makes (same shards, order, builder, bucketing), made once, up front."""
    from omnideft.data.loader import ResumableBatches, index_sources
    from omnideft.data.sources import resolve_sources
    from omnideft.families.omnigen.batch import BatchBuilder
    from omnideft.families.omnigen.model import load_omnigen
    from omnideft.families.omnigen.processor import OmniGenProcessor

    comps = load_omnigen(str(base))
    builder = BatchBuilder(OmniGenProcessor(comps.tokenizer, max_image_size=IMAGE), 0.01, SEED)
    sources = resolve_sources([str(shards)])
    data = ResumableBatches(sources, index_sources(sources), seed=SEED, batch_size=BATCH,
                            size_of=builder.output_size, build=builder)
    batches = iter(data.loader())
    return [next(batches)[0] for _ in range(n)]


def run_bare(base: Path, batches: list[dict]) -> list[float]:
    from omnideft.adapters import AdapterSpec, apply_adapter
    from omnideft.adapters.apply import param_groups
    from omnideft.families.omnigen.loss import rectified_flow_loss
    from omnideft.families.omnigen.model import load_omnigen
    from omnideft.families.omnigen.targets import target_modules as omnigen_targets
    from omnideft.flow.vae import encode_batch

    torch.manual_seed(SEED)
    comps = load_omnigen(str(base))
    spec = AdapterSpec(method="deft", rank=RANK, targets="all-linear", projector="qr")
    model = apply_adapter(comps.transformer, spec, targets=omnigen_targets)
    model.train()
    optimizer = torch.optim.AdamW(param_groups(model, spec, 1e-3), betas=(0.9, 0.99))
    params = [p for p in model.parameters() if p.requires_grad]
    vae, noise = comps.vae, torch.Generator().manual_seed(SEED)
    times = []
    for step in range(WARMUP + MEASURED):
        t0 = time.perf_counter()
        batch = batches[step % len(batches)]
        x1, cond = encode_batch(vae, batch, noise)
        loss = rectified_flow_loss(model, x1, cond, noise).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss.item()
        if step >= WARMUP:
            times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    from omnideft.shapes.shards import write_task_shards

    load_before = os.getloadavg()[0]
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="omnideft-bench-trainer-") as tmp:
        root = Path(tmp)
        base = make_base(root / "base")
        shards = write_task_shards(root / "shards", ["fill"], n_samples=64, size=IMAGE, seed=SEED, shard_size=16,
                                   n_examples=1)
        batches = bare_batches(base, shards, 16)
        trainer_step, trainer_data, bare_step, ratios = [], [], [], []
        for r in range(ROUNDS):  # A B A B ...
            step_s, data_s = run_trainer(base, shards, root / f"run{r}")
            bare_s = run_bare(base, batches)
            trainer_step += step_s
            trainer_data += data_s
            bare_step += bare_s
            ratios.append(statistics.median(step_s) / statistics.median(bare_s))
            print(f"round {r + 1}/{ROUNDS}: trainer {statistics.median(step_s) * 1e3:.1f} ms/step "
                  f"(data {statistics.median(data_s) * 1e3:.1f} ms), bare {statistics.median(bare_s) * 1e3:.1f} "
                  f"ms/step, ratio {ratios[-1]:.3f}", file=sys.stderr)

    trainer_med, bare_med = statistics.median(trainer_step), statistics.median(bare_step)
    result = {
        "trainer_vs_bare": round(statistics.median(ratios), 3),
        "trainer_vs_bare_per_round": [round(x, 3) for x in ratios],
        "trainer_vs_bare_pooled": round(trainer_med / bare_med, 3),
        "data_stall_fraction": round(sum(trainer_data) / sum(trainer_step), 4),
        "trainer_step_ms_median": round(trainer_med * 1e3, 2),
        "bare_step_ms_median": round(bare_med * 1e3, 2),
        "trainer_data_ms_median": round(statistics.median(trainer_data) * 1e3, 2),
        "trainer_compute_ms_median": round(statistics.median(s - d for s, d in zip(trainer_step, trainer_data)) * 1e3,
                                           2),
        "goals": {"trainer_vs_bare": "<= 1.10", "data_stall_fraction": "< 0.05"},
        "config": {"hidden": HIDDEN, "layers": LAYERS, "image_px": IMAGE, "batch": BATCH, "adapter": f"deft r{RANK} qr "
                   "all-linear", "rounds": ROUNDS, "measured_steps_per_run": MEASURED, "warmup_steps": WARMUP,
                   "torch_threads": torch.get_num_threads(), "loadavg_1m_before": round(load_before, 2),
                   "seconds": round(time.perf_counter() - t_start, 1)},
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
