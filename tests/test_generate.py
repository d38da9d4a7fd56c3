import numpy as np
import pytest
import torch
from PIL import Image

from omnideft.generate import OmniGenSampler, compose_in_context
from tests.diffusers_reference import diffusers_pipeline
from tests.helpers import assert_one_line_error, run_cli


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
    sampler = OmniGenSampler(tiny.transformer, tiny.vae, tiny.tokenizer, tiny.scheduler)
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
    assert_one_line_error(run_cli("generate", "--model", "tiny", "--prompt", "x", "--image", str(bad),
                                  "--out", out), "bad.png", "unreadable")
    good = tmp_path / "g.png"
    _img(16, 16, 0).save(good)
    assert_one_line_error(run_cli("generate", "--model", "tiny", "--prompt", "x <img><|image_2|></img>",
                                  "--image", str(good), "--out", out), "<|image_2|>")
    assert not (tmp_path / "o.png").exists()


def test_base_found_beside_a_moved_adapter(tmp_path):
    import json
    import shutil

    from omnideft.generate.generator import resolve_model_name
    from omnideft.model import load_omnigen, save_base

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
