import numpy as np
import pytest
import torch
from PIL import Image

from omnideft.families.omnigen.sampler import OmniGenSampler
from omnideft.prompts import compose_in_context
from tests.diffusers_reference import diffusers_pipeline
from tests.helpers import assert_one_line_error, run_cli, run_cli_here


def _img(w, h, seed):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8))


def test_compose_in_context_numbers_examples_then_query():
    a, b, q = object(), object(), object()
    instr, images = compose_in_context("make it like <img><|image_1|></img>", [q], [(a, b)])
    assert images == [a, b, q]
    assert instr == ("example 1: <img><|image_1|></img> becomes <img><|image_2|></img>. "
                     "make it like <img><|image_3|></img>")
    instr2, _ = compose_in_context("a cat", [q], [])
    assert instr2 == "a cat <img><|image_1|></img>"


@pytest.mark.parametrize("with_image", [True, False])
def test_same_pixels_as_diffusers_pipeline(tiny, with_image):
    """The uncached path is diffusers' arithmetic; the cached one is within 1e-4 of it (tests/test_kv_cache.py)."""
    sampler = OmniGenSampler(tiny.transformer, tiny.vae, tiny.tokenizer, tiny.scheduler, kv_cache=False)
    pipe = diffusers_pipeline(tiny)
    if with_image:
        prompt, imgs, kw = "red <img><|image_1|></img> circle", [_img(32, 48, 1)], dict(height=32, width=48)
    else:
        prompt, imgs, kw = "a blue square", None, dict(height=32, width=32)
    ours = sampler(prompt, imgs, steps=4, seed=5, guidance=3.0, image_guidance=1.4, **kw)
    torch.manual_seed(5)  # diffusers samples the input-image VAE posterior from the global RNG
    ref = pipe(prompt, input_images=imgs, num_inference_steps=4, guidance_scale=3.0, img_guidance_scale=1.4,
               generator=torch.Generator().manual_seed(5), **kw).images[0]
    assert ours.size == ref.size == (kw["width"], kw["height"])
    assert np.array_equal(np.asarray(ours), np.asarray(ref))


def test_determinism_and_seed_dependence(tiny):
    sampler = OmniGenSampler(tiny.transformer, tiny.vae, tiny.tokenizer, tiny.scheduler)
    a = np.asarray(sampler("a dog", None, height=32, width=32, steps=3, seed=1))
    b = np.asarray(sampler("a dog", None, height=32, width=32, steps=3, seed=1))
    c = np.asarray(sampler("a dog", None, height=32, width=32, steps=3, seed=2))
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_cli_generate_writes_png_and_sheet(tmp_path):
    ex_in, ex_out, q = (tmp_path / f"{n}.png" for n in ("ex_in", "ex_out", "q"))
    for i, p in enumerate((ex_in, ex_out, q)):
        _img(40, 40, i).save(p)
    out = tmp_path / "gen" / "out.png"
    proc = run_cli("generate", "--model", "tiny", "--prompt", "draw it", "--image", str(q), "--example",
                   f"{ex_in}={ex_out}", "--out", str(out), "--steps", "2", "--height", "32", "--width", "48")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert Image.open(out).size == (48, 32)
    sheet = Image.open(tmp_path / "gen" / "out_sheet.png")
    assert sheet.width == 4 * 128  # example in, example out, query, output


def test_cli_generate_bad_inputs(tmp_path):
    out = str(tmp_path / "o.png")
    assert_one_line_error(run_cli("generate", "--model", "tiny", "--prompt", "x", "--image", "nope.png",
                                  "--out", out), "nope.png")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"garbage")
    assert_one_line_error(run_cli_here("generate", "--model", "tiny", "--prompt", "x", "--image", str(bad),
                                       "--out", out), "bad.png", "unreadable")
    good = tmp_path / "g.png"
    _img(16, 16, 0).save(good)
    assert_one_line_error(run_cli_here("generate", "--model", "tiny", "--prompt", "x <img><|image_2|></img>",
                                       "--image", str(good), "--out", out), "<|image_2|>")
    assert not (tmp_path / "o.png").exists()


def test_base_found_beside_a_moved_adapter(tmp_path):
    import json
    import shutil

    from omnideft.adapters.folder import resolve_model_name
    from omnideft.families.omnigen.model import load_omnigen, save_base

    run = tmp_path / "run"
    save_base(load_omnigen("tiny"), run / "base")
    (run / "adapter").mkdir()
    (run / "adapter" / "adapter_config.json").write_text("{}")
    (run / "adapter" / "adapter_model.safetensors").write_bytes(b"")
    (run / "adapter" / "omnideft.json").write_text(json.dumps({"base": {"name": str(run / "base")}}))
    assert resolve_model_name(None, str(run / "adapter")) == str(run / "base")
    moved = tmp_path / "moved"
    shutil.move(run, moved)
    assert resolve_model_name(None, str(moved / "adapter")) == str((moved / "base").resolve())
    assert resolve_model_name("tiny", str(moved / "adapter")) == "tiny"


def test_a_shifted_vae_is_encoded_and_decoded_with_its_shift(tiny):
    """16-channel VAEs (SD3, FLUX) carry a `shift_factor`: latents are (sample - shift) x scale and decode inverts
    it. The sampler's input-image latents are the ones training sees (flow.vae), not diffusers' unshifted ones."""
    import copy

    from omnideft.families.omnigen.processor import image_to_tensor
    from omnideft.flow.vae import vae_decode, vae_encode

    vae = copy.deepcopy(tiny.vae)
    vae.register_to_config(shift_factor=0.25)
    pixels = torch.rand(1, 3, 32, 32) * 2 - 1
    raw = vae.encode(pixels).latent_dist.sample(torch.Generator().manual_seed(3))
    scaled = vae_encode(vae, pixels, torch.Generator().manual_seed(3))
    assert torch.equal(scaled, (raw - 0.25) * vae.config.scaling_factor)
    assert torch.allclose(vae_decode(vae, scaled), vae.decode(raw).sample, atol=1e-5)

    seen = []
    hook = tiny.transformer.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs["input_img_latents"]), with_kwargs=True)
    try:
        OmniGenSampler(tiny.transformer, vae, tiny.tokenizer, tiny.scheduler)(
            "red <img><|image_1|></img>", [_img(32, 32, 1)], height=32, width=32, steps=1, seed=7)
    finally:
        hook.remove()
    expected = vae_encode(vae, image_to_tensor(_img(32, 32, 1))[None], torch.Generator().manual_seed(7))
    assert torch.equal(seen[0][0], expected)  # the conditional row's image, the first VAE draw
