"""The condition KV cache (model/kv_cache.py, generate/sampler.py): the final image within 1e-4 (floats in [0, 1]) of
the uncached path and of diffusers' OmniGenPipeline, with and without input images, guidance rows batched or one
by one, adapters merged or not, a camera adapter; later steps really run only the time and output tokens; the
offloaded cache's fetch bookkeeping; the CUDA-only options refuse a CPU in one line."""

import numpy as np
import pytest
import torch

from omnideft.errors import UserError
from omnideft.families.generator import FamilyGenerator as Generator
from omnideft.families.omnigen.generator import offload_layers
from omnideft.families.omnigen.model import load_omnigen, save_base
from omnideft.families.omnigen.sampler import OmniGenSampler
from omnideft.prompts import compose_in_context
from tests.diffusers_reference import diffusers_pipeline
from tests.helpers import assert_one_line_error, run_cli_here
from tests.studio_world import random_adapter, random_image

TOL = 1e-4
GUIDE = dict(guidance=3.0, image_guidance=1.4)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("kv")
    save_base(load_omnigen("tiny"), root / "base")
    base = str(root / "base")
    return {"base": base, "lora": str(random_adapter(root / "lora", base, method="lora", seed=1)),
            "deft": str(random_adapter(root / "deft", base, method="deft", seed=2)),
            "camera": str(random_adapter(root / "camera", base, camera=True, seed=3))}


def _in_context():
    """Two example pairs and a query: a long condition, as in-context prompts have."""
    pairs = [(random_image(32, 32, 1), random_image(32, 32, 2)), (random_image(32, 32, 3), random_image(32, 32, 4))]
    return compose_in_context("do it to <img><|image_1|></img>", [random_image(32, 32, 5)], pairs)


def _sample(tiny, instruction, images, **options):
    sampler = OmniGenSampler(tiny.transformer, tiny.vae, tiny.tokenizer, tiny.scheduler, **options)
    latents = sampler.denoise(instruction, images, height=32, width=32, steps=4, seed=5, **GUIDE)
    return sampler.decode(latents), sampler


@pytest.mark.parametrize("with_images", [True, False])
def test_cached_equals_uncached_and_diffusers(tiny, with_images):
    instruction, images = _in_context() if with_images else ("a blue square", [])
    uncached, _ = _sample(tiny, instruction, images, kv_cache=False)
    cached, sampler = _sample(tiny, instruction, images)
    torch.manual_seed(5)  # diffusers samples the input-image VAE posterior from the global RNG
    reference = diffusers_pipeline(tiny)(
        instruction, input_images=images or None, height=32, width=32, num_inference_steps=4,
        guidance_scale=GUIDE["guidance"], img_guidance_scale=GUIDE["image_guidance"],
        generator=torch.Generator().manual_seed(5), output_type="np").images[0]
    assert cached.shape == uncached.shape == reference.shape == (32, 32, 3)
    assert np.abs(uncached - reference).max() == 0  # the uncached path is diffusers' arithmetic
    assert np.abs(cached - uncached).max() <= TOL
    assert np.abs(cached - reference).max() <= TOL
    assert cached.std() > 0.01  # an image, not a constant
    summary = sampler.last_caches[0].summary  # the tensors themselves are freed when sampling ends
    rows, heads = 3 if with_images else 2, tiny.transformer.config.num_attention_heads
    tail = 1 + (32 // 16) ** 2  # time token + 2x2 output tokens
    assert summary["shape"] == (rows, heads, summary["n_condition"] + tail, 32 // heads)
    assert summary["nbytes"] == 2 * len(tiny.transformer.layers) * rows * summary["n_condition"] * 32 * 4  # fp32
    assert sampler.last_caches[0].keys[0] is None


def test_replay_steps_carry_only_the_time_and_output_tokens(tiny):
    instruction, images = _in_context()
    lengths = []
    hook = tiny.transformer.layers[0].register_forward_pre_hook(lambda m, args, kw: lengths.append(args[0].shape[1]),
                                                               with_kwargs=True)
    try:
        _, sampler = _sample(tiny, instruction, images)
    finally:
        hook.remove()
    tail = 1 + (32 // 16) ** 2  # time token + 2x2 output tokens
    n_condition = sampler.last_caches[0].summary["n_condition"]
    assert n_condition > 3 * 4  # three images of 4 tokens each, plus text
    assert lengths == [n_condition + tail] + [tail] * 3


@pytest.mark.parametrize("kv_cache", [True, False])
def test_separate_guidance_rows_equal_batched(tiny, kv_cache):
    instruction, images = _in_context()
    batched, batched_sampler = _sample(tiny, instruction, images)
    separate, sampler = _sample(tiny, instruction, images, kv_cache=kv_cache, separate_cfg=True)
    assert np.abs(separate - batched).max() <= TOL
    if kv_cache:  # one cache per row, each without the padding the rows share when batched
        summaries = [c.summary for c in sampler.last_caches]
        assert [s["shape"][0] for s in summaries] == [1, 1, 1]
        lengths = sorted(s["n_condition"] for s in summaries)
        assert lengths[0] < lengths[1] < lengths[2] == batched_sampler.last_caches[0].summary["n_condition"]


def test_offloaded_cache_fetches_one_layer_ahead(tiny):
    """On CPU the 'offloaded' store is CPU memory too (no pinning, no stream): what is tested is the bookkeeping,
    every layer fetched once per replay step and at most two layers resident, and that the pixels do not change."""
    instruction, images = _in_context()
    plain, _ = _sample(tiny, instruction, images)
    offloaded, sampler = _sample(tiny, instruction, images, offload_kv_cache=True)
    assert np.array_equal(plain, offloaded)
    cache = sampler.last_caches[0]
    layers = len(tiny.transformer.layers)
    assert cache.store_device == torch.device("cpu") and cache.fetches == layers * 3 and cache.peak_resident == 2


def _request():
    return "make it so <img><|image_1|></img>", [random_image(32, 32, 5)], \
        [(random_image(32, 32, 1), random_image(32, 32, 2))]


def _generate(generator, **kw):
    prompt, query, pairs = _request()
    return generator(prompt, query, pairs, steps=3, seed=2, height=32, width=32, output_type="np", **kw)[0]


def _diffusers(generator):
    """diffusers' OmniGenPipeline on the generator's transformer (adapter layers and all), same request."""
    from omnideft.adapters.fingerprint import base_model_of

    prompt, query, pairs = _request()
    instruction, images = compose_in_context(prompt, query, pairs)
    components = generator.components
    components.transformer = base_model_of(generator.transformer)
    torch.manual_seed(2)
    return diffusers_pipeline(components)(
        instruction, input_images=images, height=32, width=32, num_inference_steps=3, guidance_scale=2.5,
        img_guidance_scale=1.6, generator=torch.Generator().manual_seed(2), output_type="np").images[0]


@pytest.mark.parametrize("adapter", ["lora", "deft"])
def test_adapters_merged_or_separate_cached_or_not(world, adapter):
    images, reference = {}, {}
    for merge in (True, False):
        for kv in (True, False):
            g = Generator.from_pretrained(world["base"], [world[adapter]], device="cpu", merge=merge, kv_cache=kv)
            assert hasattr(g.transformer, "get_base_model") != merge  # merged: the plain transformer
            images[merge, kv] = _generate(g)
        reference[merge] = _diffusers(g)
    bare = _generate(Generator.from_pretrained(world["base"], device="cpu"))
    assert np.abs(images[True, True] - bare).max() > 0.01  # the adapter changes the image
    for (merge, kv), image in images.items():
        assert np.abs(image - images[False, False]).max() <= TOL, (merge, kv)
        assert np.abs(image - reference[merge]).max() <= TOL, (merge, kv)
    assert np.array_equal(images[False, False], reference[False])  # uncached, unmerged: diffusers' arithmetic


def test_camera_adapter_cached_equals_uncached(world):
    view = [0.9, 0.5, 0.5, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 2.0]
    other = [0.9, 0.5, 0.5, 0.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 2.0]
    out = {}
    for kv in (True, False):
        g = Generator.from_pretrained(world["base"], [world["camera"]], device="cpu", kv_cache=kv)
        assert g.camera_prompt.encoding == "learned"
        out[kv] = [_generate(g, camera=v) for v in (view, other)]
    assert np.abs(out[True][0] - out[True][1]).max() > 1e-3  # the camera reaches the (cached) condition
    for a, b in zip(out[True], out[False]):
        assert np.abs(a - b).max() <= TOL


def test_no_merge_takes_one_adapter_at_weight_one(world):
    with pytest.raises(UserError, match="--no-merge keeps one adapter at weight 1"):
        Generator.from_pretrained(world["base"], [(world["lora"], 0.5)], device="cpu", merge=False)


def test_offloaded_layers_give_the_same_image(world):
    """diffusers' group offloading, with the CPU standing in for the GPU: hooks on every block, same pixels."""
    g = Generator.from_pretrained(world["base"], [world["lora"]], device="cpu")
    before = _generate(g)
    offload_layers(g.transformer, "cpu")
    hooked = [name for name, m in g.transformer.named_modules() if hasattr(m, "_diffusers_hook")]
    assert {f"layers.{i}" for i in range(len(g.transformer.layers))} <= set(hooked)
    assert np.array_equal(_generate(g), before)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal without CUDA")
def test_cuda_only_options_refuse_a_cpu_in_one_line(tmp_path):
    for option in ("--offload", "--offload-kv-cache"):
        proc = run_cli_here("generate", "--model", "tiny", "--prompt", "x", "--out", str(tmp_path / "o.png"), option)
        assert_one_line_error(proc, option, "CUDA")
    assert not (tmp_path / "o.png").exists()


def test_offloading_a_cache_that_is_off_is_refused():
    from omnideft.families.omnigen.generator import check_speed_options

    check_speed_options("cuda", kv_cache=True, offload=True, offload_kv_cache=True)  # what a GPU user may ask
    with pytest.raises(UserError, match="--offload-kv-cache offloads the KV cache, which --no-kv-cache turns off"):
        check_speed_options("cuda", kv_cache=False, offload=False, offload_kv_cache=True)
    with pytest.raises(UserError, match="--offload needs a CUDA device"):
        check_speed_options("mps", kv_cache=True, offload=True, offload_kv_cache=False)
