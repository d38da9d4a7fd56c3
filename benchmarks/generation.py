"""Benchmark: in-context generation with the condition KV cache against the uncached path and diffusers.

Model: a width-reduced OmniGen (4 layers, hidden 512, intermediate 1365 = OmniGen's 8192/3072 ratio, 8 heads with
as many key/value heads as OmniGen's full multi-head attention, su-scaled RoPE; random weights, the tiny preset's
VAE and offline tokenizer). Request: 256 x 256 output, 2 in-context example pairs plus a query image (five 256 px
input images: 1280 image tokens of condition), 3 guidance rows in one batch, 20 steps, CPU fp32.

Variants, interleaved (cached, uncached, diffusers, cached, ...) for ROUNDS rounds, medians:
- cached: omnideft's sampler (the default: condition KV cache, batched rows);
- uncached: the same sampler with kv_cache=False (diffusers' arithmetic, pixel for pixel);
- diffusers: diffusers' OmniGenPipeline on the same weights, seed and settings. Its processor needs torchvision;
  without it, the three torchvision transforms it uses are stood in for (tests/diffusers_reference.py) and
  `diffusers_processor` says "shim" (the transformer, scheduler and VAE, which take the time, are diffusers' own).
  `vs_diffusers_speedup` is null when diffusers' pipeline cannot run at all.

`max_abs_pixel_diff`: the largest difference in 8-bit pixel levels of the cached image against the uncached one
and against diffusers' (0 = same pixels); `max_abs_float_diff` the same on the [0, 1] float images.
`peak_mem_cached_vs_uncached`: the extra resident memory while sampling (peak RSS minus RSS before sampling, each
variant in a fresh process with the peak reset after the model is built, so neither the build nor the other
variant's peak hides it) of cached over uncached; `kv_cache_mb`: the condition keys/values the cache holds. Goal:
both speed-ups >= 3.5 at the same pixels.

FLUX.2 [klein] (`klein`): omnideft's generator against diffusers' Flux2KleinPipeline called directly, on a
width-reduced klein saved in the diffusers layout (transformer width 256 = 4 heads of 64, 2 double + 4 single blocks;
the tiny preset's Qwen3, VAE and tokenizer; diffusers' default initialisation), each side loading it its own way
(omnideft's loader, `Flux2KleinPipeline.from_pretrained`). Request: one in-context example pair and a query image
(three 128 px references), 128 x 128 output, 8 steps, guidance 4 (two rows, the base model's guidance), seed 0.
Interleaved for ROUNDS rounds, medians; the 8-bit pixels must be equal (asserted). `omnideft_vs_pipeline` is
omnideft's time over the pipeline's (1 = nothing added).

No arguments (OMNIDEFT_BENCH_ROUNDS overrides ROUNDS); the last line is one JSON object. On 2 busy cores a round
takes minutes: see loadavg_1m_before.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

HIDDEN, HEADS, LAYERS, INTER = 512, 8, 4, 1365
SIZE, STEPS, PAIRS = 256, 20, 2
GUIDANCE, IMAGE_GUIDANCE, SEED = 2.5, 1.6, 0
ROUNDS = int(os.environ.get("OMNIDEFT_BENCH_ROUNDS", "3"))
PROMPT = "make <img><|image_1|></img> the way the examples do"


def components():
    from diffusers import OmniGenTransformer2DModel

    from omnideft.families.omnigen.model import load_omnigen
    from omnideft.families.omnigen.model.tiny import omnigen_config
    from omnideft.model.tokenizer import tiny_vocab

    comps = load_omnigen("tiny", seed=SEED)
    torch.manual_seed(SEED)
    comps.transformer = OmniGenTransformer2DModel(**omnigen_config(
        HIDDEN, HEADS, LAYERS, INTER, len(tiny_vocab()), time_step_dim=256)).eval().requires_grad_(False)
    return comps


def request():
    from PIL import Image

    from omnideft.prompts import compose_in_context

    rng = np.random.default_rng(SEED)

    def image():
        return Image.fromarray(rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8))

    pairs = [(image(), image()) for _ in range(PAIRS)]
    return compose_in_context(PROMPT, [image()], pairs)


def run_omnideft(comps, instruction, images, kv_cache: bool, caches: list | None = None) -> np.ndarray:
    """The image as floats in [0, 1]; the sampler's cache summaries are appended to `caches` when given."""
    from omnideft.families.omnigen.sampler import OmniGenSampler

    sampler = OmniGenSampler(comps.transformer, comps.vae, comps.tokenizer, comps.scheduler, kv_cache=kv_cache)
    image = sampler.decode(sampler.denoise(instruction, images, height=SIZE, width=SIZE, steps=STEPS,
                                           guidance=GUIDANCE, image_guidance=IMAGE_GUIDANCE, seed=SEED))
    if caches is not None:
        caches.extend(c.summary for c in sampler.last_caches)
    return image


def diffusers_pipeline(comps):
    """(pipeline, "torchvision" | "shim") or (None, reason)."""
    try:
        import torchvision  # noqa: F401
        from diffusers import OmniGenPipeline

        return OmniGenPipeline(transformer=comps.transformer, scheduler=comps.scheduler, vae=comps.vae,
                               tokenizer=comps.tokenizer), "torchvision"
    except ImportError:
        pass
    try:
        from tests.diffusers_reference import diffusers_pipeline as shimmed

        return shimmed(comps), "shim"
    except ImportError as exc:
        return None, f"unavailable: {exc}"


def run_diffusers(pipe, instruction, images) -> np.ndarray:
    torch.manual_seed(SEED)  # diffusers draws the input-image VAE samples from the global RNG
    return pipe(instruction, input_images=images, height=SIZE, width=SIZE, num_inference_steps=STEPS,
                guidance_scale=GUIDANCE, img_guidance_scale=IMAGE_GUIDANCE,
                generator=torch.Generator().manual_seed(SEED), output_type="np").images[0]


def status_kb(field: str) -> int:
    return int(re.search(rf"{field}:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1))


def peak_sampling_memory(kv_cache: bool) -> int:
    """Run in a fresh process (Linux): the peak RSS while sampling minus the RSS before (weights, inputs,
    libraries). The peak is reset first (/proc/self/clear_refs), so building the model does not count."""
    comps = components()
    instruction, images = request()
    before = status_kb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    run_omnideft(comps, instruction, images, kv_cache)
    return (status_kb("VmHWM") - before) * 1024


def measure_in_subprocess(kv_cache: bool) -> int | None:
    if not Path("/proc/self/clear_refs").exists():
        return None
    code = (f"import sys; sys.path.insert(0, {str(REPO)!r}); import benchmarks.generation as g; "
            f"print(g.peak_sampling_memory({kv_cache}))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    if proc.returncode != 0:
        print(proc.stderr[-2000:], file=sys.stderr)
        return None
    return int(proc.stdout.strip().splitlines()[-1])


# -- FLUX.2 [klein] ----------------------------------------------------------------------------------------------------

KLEIN_WIDTH = dict(num_layers=2, num_single_layers=4, attention_head_dim=64, num_attention_heads=4,
                   axes_dims_rope=(16, 16, 16, 16))
KLEIN_SIZE, KLEIN_STEPS, KLEIN_GUIDANCE = 128, 8, 4.0


def klein_base(folder: Path) -> Path:
    from diffusers import Flux2Transformer2DModel

    from omnideft.families.flux2.model import tiny_transformer_config
    from omnideft.families.registry import get_family

    family = get_family("flux2")
    comps = family.load("tiny", seed=SEED)
    torch.manual_seed(SEED)
    comps.transformer = Flux2Transformer2DModel(**(tiny_transformer_config() | KLEIN_WIDTH)).eval()
    family.save(comps, folder)
    return folder


def interleaved(variants: dict, label: str = "") -> tuple[dict, dict]:
    """Each variant once per round, in turn, for ROUNDS rounds (a slower machine moment hits every variant alike):
    (the last output of each, the median seconds of each)."""
    times: dict = {name: [] for name in variants}
    outputs = {}
    for r in range(ROUNDS):
        for name, run in variants.items():
            t0 = time.perf_counter()
            outputs[name] = run()
            times[name].append(time.perf_counter() - t0)
            print(f"{label}round {r + 1}/{ROUNDS} {name}: {times[name][-1]:.2f} s", file=sys.stderr)
    return outputs, {name: statistics.median(ts) for name, ts in times.items()}


def run_klein() -> dict:
    from diffusers import Flux2KleinPipeline
    from PIL import Image

    from omnideft.families.registry import get_family

    rng = np.random.default_rng(SEED)
    a, b, query = (Image.fromarray(rng.integers(0, 255, (KLEIN_SIZE, KLEIN_SIZE, 3), dtype=np.uint8))
                   for _ in range(3))
    with tempfile.TemporaryDirectory() as tmp:
        folder = klein_base(Path(tmp) / "klein")
        family = get_family("flux2")
        generator = family.generator(family.load(str(folder)), device="cpu")
        pipe = Flux2KleinPipeline.from_pretrained(str(folder))
    pipe.set_progress_bar_config(disable=True)
    settings = dict(height=KLEIN_SIZE, width=KLEIN_SIZE, num_inference_steps=KLEIN_STEPS,
                    guidance_scale=KLEIN_GUIDANCE, output_type="np")
    variants = {
        "omnideft": lambda: generator("make it blue", images=[query], examples=[(a, b)], seed=SEED, steps=KLEIN_STEPS,
                                      guidance=KLEIN_GUIDANCE, height=KLEIN_SIZE, width=KLEIN_SIZE,
                                      output_type="np")[0],
        # the same request as the pipeline takes it: the references in order, the placeholders as "image k"
        "pipeline": lambda: pipe(prompt="example 1: image 1 becomes image 2. make it blue image 3",
                                 image=[a, b, query], generator=torch.Generator().manual_seed(SEED),
                                 **settings).images[0],
    }
    outputs, median = interleaved(variants, "klein ")
    levels = {n: np.round(o * 255).astype(np.int16) for n, o in outputs.items()}
    pixel_diff = int(np.abs(levels["omnideft"] - levels["pipeline"]).max())
    assert pixel_diff == 0, f"omnideft's klein image differs from the pipeline's by {pixel_diff} levels"
    assert levels["pipeline"].std() > 1  # a picture, not a constant
    return {"omnideft_vs_pipeline": round(median["omnideft"] / median["pipeline"], 3),
            "max_abs_pixel_diff": pixel_diff,
            "max_abs_float_diff": float(np.abs(outputs["omnideft"] - outputs["pipeline"]).max()),
            "median_s": {n: round(v, 3) for n, v in median.items()}, "rounds": ROUNDS,
            "config": dict(KLEIN_WIDTH, size=KLEIN_SIZE, steps=KLEIN_STEPS, guidance=KLEIN_GUIDANCE, references=3,
                           dtype="fp32", device="cpu")}


def main() -> None:
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    load_before = os.getloadavg()[0]
    comps = components()
    instruction, images = request()
    pipe, processor = diffusers_pipeline(comps)
    if pipe is not None:
        pipe.set_progress_bar_config(disable=True)
    summaries = []
    variants = {"cached": lambda: run_omnideft(comps, instruction, images, True, summaries),
                "uncached": lambda: run_omnideft(comps, instruction, images, False)}
    if pipe is not None:
        variants["diffusers"] = lambda: run_diffusers(pipe, instruction, images)
    outputs, median = interleaved(variants)
    others = [outputs[n] for n in ("uncached", "diffusers") if n in outputs]
    float_diff = max(float(np.abs(outputs["cached"] - o).max()) for o in others)
    pixels = {n: (o * 255).round().astype(np.int16) for n, o in outputs.items()}
    pixel_diff = max(int(np.abs(pixels["cached"] - pixels[n]).max()) for n in ("uncached", "diffusers")
                     if n in pixels)
    mem_cached, mem_uncached = measure_in_subprocess(True), measure_in_subprocess(False)
    result = {
        "cached_vs_uncached_speedup": round(median["uncached"] / median["cached"], 2),
        "vs_diffusers_speedup": round(median["diffusers"] / median["cached"], 2) if pipe is not None else None,
        "max_abs_pixel_diff": pixel_diff,
        "max_abs_float_diff": float_diff,
        "peak_mem_cached_vs_uncached": (round(mem_cached / mem_uncached, 2) if mem_cached and mem_uncached
                                        else None),
        "peak_sampling_mem_mb": {"cached": mem_cached and round(mem_cached / 2**20),
                                 "uncached": mem_uncached and round(mem_uncached / 2**20)},
        "kv_cache_mb": round(summaries[-1]["nbytes"] / 2**20, 1),
        "median_s": {n: round(v, 2) for n, v in median.items()},
        "rounds": ROUNDS,
        "diffusers_processor": processor,
        "config": {"hidden": HIDDEN, "heads": HEADS, "layers": LAYERS, "intermediate": INTER, "size": SIZE,
                   "steps": STEPS, "example_pairs": PAIRS, "query_images": 1, "guidance_rows": 3, "dtype": "fp32",
                   "device": "cpu", "threads": torch.get_num_threads(),
                   "condition_tokens": summaries[-1]["n_condition"]},
        "loadavg_1m_before": round(load_before, 2),
    }
    result["klein"] = run_klein()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
