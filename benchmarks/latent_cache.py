"""Benchmark: trainer step time with a latent cache (`data.latents`) against encoding every step, at the real
OmniGen's ratio of VAE to transformer cost.

The real ratio comes from FLOPs: SDXL's VAE encoder counted by `torch.utils.flop_counter` on the meta device for the
shipped config (omnideft/families/omnigen/configs/), the transformer's training step from its shapes (linears
2 x params x tokens, attention 4 L^2 H per block; backward through the frozen base ~1x the linears and 2x the
attention; gradient checkpointing one more forward) for recipes/omnigen_deft_r32.yaml's workload: 512 px, 2 input
images + the output.

On this CPU a reduced transformer (hidden 512, 8 blocks) is paired with the reduced VAE whose measured encode time
per batch, relative to the transformer's step, is closest to that real ratio (calibrated from a few widths), then
`omnideft.train.loop.train` runs with and without the cache, interleaved A B A B (ROUNDS each), on the same shards.
Last line: one JSON object with the real and the benchmark's VAE shares and `speedup` = median step without cache /
with (no goal below 1.0x). About two minutes on 2 idle cores.
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

HIDDEN, HEADS, LAYERS, MLP = 512, 8, 8, 2048
IMAGE, BATCH, STEPS, WARMUP, ROUNDS, SEED = 64, 2, 10, 2, 4, 0
VAE_WIDTHS = (4, 8)


def real_vae_share(image: int = 512, inputs: int = 2, text: int = 128, checkpointing: bool = True) -> dict:
    """FLOPs of encoding a sample's images over FLOPs of the transformer's training step, for the real OmniGen."""
    from diffusers import AutoencoderKL
    from torch.utils.flop_counter import FlopCounterMode

    from omnideft.adapters.spec import AdapterSpec
    from omnideft.families.omnigen.plan import measure_shapes, model_configs

    tcfg, vcfg = model_configs("Shitao/OmniGen-v1-diffusers")
    with torch.device("meta"), FlopCounterMode(display=False) as counter, torch.no_grad():
        AutoencoderKL.from_config(vcfg).encode(torch.empty(1, 3, image, image))
    vae = counter.get_total_flops() * (inputs + 1)
    s = measure_shapes(tcfg, vcfg, AdapterSpec(rank=32, projector="qr"))
    tokens = text + (inputs + 1) * (image // 16) ** 2 + 1
    linear = 2 * s.layers * (4 * s.hidden**2 + 3 * s.hidden * s.intermediate) * tokens
    attention = 4 * tokens**2 * s.hidden * s.layers
    step = 2 * linear + 3 * attention + (linear + attention if checkpointing else 0)
    return {"vae_tflop": vae / 1e12, "transformer_step_tflop": step / 1e12, "tokens": tokens,
            "vae_share": vae / (vae + step)}


def make_base(folder: Path, vae_width: int) -> Path:
    from diffusers import AutoencoderKL, OmniGenTransformer2DModel

    from omnideft.families.omnigen.model import load_omnigen, save_base
    from omnideft.families.omnigen.model.tiny import omnigen_config, tiny_vae_config

    comps = load_omnigen("tiny", seed=SEED)
    torch.manual_seed(SEED)
    cfg = omnigen_config(HIDDEN, HEADS, LAYERS, MLP, comps.transformer.config.vocab_size, 64)
    comps.transformer = OmniGenTransformer2DModel(**cfg)
    comps.vae = AutoencoderKL(**dict(tiny_vae_config(vae_width), norm_num_groups=4))
    save_base(comps, folder)
    return folder


def calibrate(tmp: Path, shards: Path, target: float) -> tuple[int, dict]:
    """The VAE width whose measured share of a step (encode / (encode + transformer step)) is closest to `target`."""
    from omnideft.adapters import apply_adapter
    from omnideft.adapters.spec import AdapterSpec
    from omnideft.data.indexed import ShardIndex
    from omnideft.data.shards import decode_sample
    from omnideft.data.sources import resolve_sources
    from omnideft.families.omnigen.batch import BatchBuilder
    from omnideft.families.omnigen.loss import rectified_flow_loss
    from omnideft.families.omnigen.model import load_omnigen
    from omnideft.families.omnigen.processor import OmniGenProcessor
    from omnideft.families.omnigen.targets import target_modules as omnigen_targets
    from omnideft.flow.vae import encode_batch

    index = ShardIndex(resolve_sources([str(shards)])[0].urls)
    shares = {}
    for width in VAE_WIDTHS:
        comps = load_omnigen(str(make_base(tmp / f"base{width}", width)))
        model = apply_adapter(comps.transformer, AdapterSpec(rank=16, projector="qr"), targets=omnigen_targets)
        build = BatchBuilder(OmniGenProcessor(comps.tokenizer, IMAGE), 0.0, SEED)
        batch = build([decode_sample(index.read(i)) for i in range(BATCH)])
        g = torch.Generator().manual_seed(0)
        vae_s, step_s = [], []
        for _ in range(5):
            t0 = time.perf_counter()
            x1, cond = encode_batch(comps.vae, batch, g, per_image=True)
            t1 = time.perf_counter()
            rectified_flow_loss(model, x1, cond, g).mean().backward()
            t2 = time.perf_counter()
            vae_s.append(t1 - t0)
            step_s.append(t2 - t1)
        vae, step = statistics.median(vae_s[1:]), statistics.median(step_s[1:])
        shares[width] = vae / (vae + step)
    best = min(shares, key=lambda w: abs(shares[w] - target))
    return best, shares


def run(base: Path, shards: Path, out: Path, latents: Path | None) -> float:
    from omnideft.train.loop import train
    from omnideft.train.recipe import load_recipe

    overrides = [f"model.name={base}", f"data.shards=[{shards}]", f"data.max_image_size={IMAGE}", "adapter.rank=16",
                 f"train.max_steps={STEPS}", f"train.batch_size={BATCH}", "train.checkpoint_every=0",
                 "output.tensorboard=false", f"output.dir={out}", "data.condition_dropout=0.0"]
    if latents:
        overrides.append(f"data.latents={latents}")
    train(load_recipe(None, overrides), progress=False)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return statistics.median(r["step_s"] for r in rows[WARMUP:])


def main() -> None:
    from omnideft.shapes.shards import write_task_shards
    from omnideft.train.cache_latents import cache_latents

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    load_before = os.getloadavg()[0]
    real = real_vae_share()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        shards = write_task_shards(tmp / "shards", ["fill"], n_samples=BATCH * STEPS, size=IMAGE, seed=SEED,
                                   shard_size=16, n_examples=1)
        width, shares = calibrate(tmp, shards, real["vae_share"])
        base = tmp / f"base{width}"
        cache = tmp / "cache"
        t0 = time.perf_counter()
        cache_latents([str(shards)], str(base), str(cache), IMAGE, progress=False)
        cache_s = time.perf_counter() - t0
        encoded, cached = [], []
        for r in range(ROUNDS):
            encoded.append(run(base, shards, tmp / f"enc{r}", None))
            cached.append(run(base, shards, tmp / f"cache{r}", cache))
            print(f"round {r}: encode {encoded[-1] * 1e3:.1f} ms/step, cached {cached[-1] * 1e3:.1f} ms/step",
                  file=sys.stderr)
    ratios = [e / c for e, c in zip(encoded, cached)]
    print(json.dumps({
        "real_omnigen": {k: round(v, 4) for k, v in real.items()},
        "bench_vae_width": width, "bench_vae_share_by_width": {k: round(v, 4) for k, v in shares.items()},
        "step_ms_encoded": round(statistics.median(encoded) * 1e3, 2),
        "step_ms_cached": round(statistics.median(cached) * 1e3, 2),
        "speedup": round(statistics.median(ratios), 4), "speedup_per_round": [round(x, 4) for x in ratios],
        "cache_write_s": round(cache_s, 2), "torch_threads": torch.get_num_threads(),
        "loadavg_1m_before": round(load_before, 2)}))


if __name__ == "__main__":
    main()
