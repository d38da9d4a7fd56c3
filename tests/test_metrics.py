"""The image metrics on tiny random models: identities, known perturbations, independent recomputations, and the
one-line errors for missing weights, wrong model folders and unknown names."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from omnideft.errors import UserError
from omnideft.eval.metrics import METRICS, MetricBatch, MetricOptions, parse_metrics
from omnideft.eval.metrics.base import NEEDS
from tests.metric_models import save_aesthetic, save_clip, save_inception


def noise(seed: int, size=(40, 32), lo: int = 0, hi: int = 256) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(lo, hi, (size[1], size[0], 3), dtype=np.uint8))


def shifted(img: Image.Image, delta: int) -> Image.Image:
    return Image.fromarray((np.asarray(img, dtype=np.int16) + delta).astype(np.uint8))


@pytest.fixture(scope="module")
def models(metric_models):
    return metric_models


@pytest.fixture(scope="module")
def options(models):
    return MetricOptions(clip_model=str(models["clip"]), dino_model=str(models["dino"]),
                         dinov2_model=str(models["dinov2"]), depth_model=str(models["depth"]),
                         aesthetic_model=str(models["aesthetic"]), aesthetic_clip_model=str(models["clip"]),
                         fid_features="dinov2")


def score(name: str, options: MetricOptions, **batch) -> list[float]:
    return METRICS[name](options).score(MetricBatch(**batch))


def test_identical_images_score_perfectly(options):
    imgs = [noise(i) for i in range(3)]
    batch = dict(pred=imgs, ref=[im.copy() for im in imgs])
    for name in ("clip_i", "dino_v1", "dino_v2", "ssim", "canny_f1", "binary_f1"):
        assert score(name, options, **batch) == pytest.approx([1.0] * 3, abs=1e-5), name
    for name in ("rmse", "depth_rmse"):
        assert score(name, options, **batch) == pytest.approx([0.0] * 3, abs=1e-6), name
    assert score("psnr", options, **batch) == [math.inf] * 3


def test_different_images_score_below_perfect(options):
    flat = Image.new("RGB", (40, 32), (200, 30, 30))
    ramp = Image.fromarray(np.tile(np.linspace(0, 255, 40, dtype=np.uint8)[None, :, None], (32, 1, 3)))
    batch = dict(pred=[flat, ramp], ref=[noise(3), noise(4)])
    for name in ("clip_i", "dino_v1", "dino_v2", "ssim"):
        assert all(v < 0.9995 for v in score(name, options, **batch)), name  # random tiny DINOs are blunt
    assert all(v > 1 for v in score("depth_rmse", options, **batch))


def test_known_perturbation_gives_known_rmse_and_psnr(options):
    ref = noise(5, lo=20, hi=236)  # room for +-10 without clipping
    up, down = shifted(ref, 10), shifted(ref, -10)
    rmse = score("rmse", options, pred=[up, down], ref=[ref, ref])
    assert rmse == pytest.approx([10.0, 10.0], abs=1e-9)  # uint8 subtraction would wrap -10 to 246
    assert score("psnr", options, pred=[up], ref=[ref]) == pytest.approx([20 * math.log10(255 / 10)], abs=1e-6)
    half = np.asarray(ref, dtype=np.int16).copy()
    half[: half.shape[0] // 2] += 20  # half the pixels off by 20: MSE 200
    assert score("rmse", options, pred=[Image.fromarray(half.astype(np.uint8))], ref=[ref]) == \
        pytest.approx([math.sqrt(200)], abs=1e-9)
    assert 0.99 < score("ssim", options, pred=[up], ref=[ref])[0] < 1  # structure kept, luminance term < 1
    assert score("ssim", options, pred=[noise(6)], ref=[ref])[0] < 0.2


def test_prediction_is_resized_to_its_reference(options):
    ref = Image.new("RGB", (40, 32), (90, 120, 30))
    big = ref.resize((80, 64))
    assert score("rmse", options, pred=[big], ref=[ref]) == pytest.approx([0.0], abs=1e-6)


def test_binary_f1_counts_pixels():
    def mask(rows):
        arr = np.zeros((10, 10, 3), np.uint8)
        arr[rows] = 255
        return Image.fromarray(arr)

    # pred rows 0-3 (40 px), ref rows 2-7 (60 px): TP 20, FP 20, FN 40 -> F1 = 40 / (40 + 60) = 0.4
    assert score("binary_f1", MetricOptions(), pred=[mask(slice(0, 4))], ref=[mask(slice(2, 8))]) == \
        pytest.approx([0.4])


def test_canny_f1_against_a_condition_edge_map(options):
    import cv2

    ref = Image.new("RGB", (48, 48), "black")
    ref.paste((255, 255, 255), (12, 12, 36, 36))  # a square: clean edges
    edges = Image.fromarray(cv2.Canny(np.asarray(ref), 100, 200)).convert("RGB")
    blank = Image.new("RGB", (48, 48), "gray")
    values = score("canny_f1", options, pred=[ref, blank], cond=[edges, edges], ref=[None, None])
    assert values == pytest.approx([1.0, 0.0])


def test_clip_t_ignores_image_placeholders_and_matches_transformers(options, models):
    from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel

    img = noise(7)
    tagged, plain = score("clip_t", options, pred=[img, img], prompt=["a red cup <img><|image_1|></img>", "a red cup"])
    assert tagged == pytest.approx(plain, abs=1e-6)
    model = CLIPModel.from_pretrained(models["clip"]).eval()
    tok = AutoTokenizer.from_pretrained(models["clip"])
    pixels = AutoImageProcessor.from_pretrained(models["clip"])(images=[img], return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        def feats(out):
            return out if isinstance(out, torch.Tensor) else out.pooler_output
        i = feats(model.get_image_features(pixel_values=pixels))
        t = feats(model.get_text_features(**tok(["a red cup"], return_tensors="pt")))
    assert plain == pytest.approx(torch.nn.functional.cosine_similarity(i, t).item(), abs=1e-5)


def test_aesthetic_is_the_linear_chain_on_normalised_clip_embeddings(options, models):
    from safetensors.torch import load_file

    from omnideft.eval.metrics.clip import ClipEncoder

    img = noise(8)
    x = ClipEncoder(str(models["clip"]), "--clip-model", "cpu").images([img])
    assert x.norm(dim=-1).item() == pytest.approx(1.0, abs=1e-6)
    state = load_file(str(models["aesthetic"]))
    for k in (0, 2, 4, 6, 7):
        x = x @ state[f"layers.{k}.weight"].T + state[f"layers.{k}.bias"]
    assert score("aesthetic", options, pred=[img]) == pytest.approx([x.item()], abs=1e-5)


def test_sharpness_is_zero_for_flat_and_higher_for_detail(options):
    from PIL import ImageFilter

    flat = Image.new("RGB", (32, 32), (100, 100, 100))
    sharp = noise(9, size=(32, 32))
    blurred = sharp.filter(ImageFilter.GaussianBlur(2))
    flat_v, sharp_v, blur_v = score("sharpness", options, pred=[flat, sharp, blurred])
    assert flat_v == 0.0 and sharp_v > 10 * blur_v > 0


def test_shape_metrics_read_kind_and_colour_from_the_reference(options):
    from omnideft.shapes import COLOURS, Scene, outline, render

    target = render(Scene("circle", "green", 0.5, 0.5, 0.25), 64)
    moved = render(Scene("circle", "red", 0.6, 0.5, 0.25), 64)
    edges = outline(target)
    assert score("shape_iou", options, pred=[target, edges], ref=[target, edges]) == [1.0, 1.0]
    iou, = score("shape_iou", options, pred=[moved], ref=[target])
    assert 0.3 < iou < 0.9
    err = score("colour_error", options, pred=[target, moved], ref=[target, target])
    assert err[0] == 0.0 and err[1] == pytest.approx(np.linalg.norm(np.subtract(COLOURS["red"], COLOURS["green"])))


def test_fid_in_dinov2_space_matches_the_frechet_formula(options):
    from omnideft.eval.metrics.dino import DinoEncoder

    real = [noise(10 + i) for i in range(6)]
    fake = [noise(30 + i, lo=60, hi=200) for i in range(5)]
    fid = METRICS["fid"](options)
    fid.update(real, real=True)
    fid.update(fake, real=False)
    enc = DinoEncoder("Dinov2Model", options.dinov2_model, "--dinov2-model", "cpu", "dinov2")

    def stats(images):
        pixels = enc.processor(images=images, return_tensors="pt")["pixel_values"]
        with torch.no_grad():
            f = enc.model(pixel_values=pixels).last_hidden_state[:, 0].double().numpy()
        return f.mean(0), np.cov(f, rowvar=False)

    (m1, s1), (m2, s2) = stats(real), stats(fake)
    trace_sqrt = np.sqrt(np.linalg.eigvals(s1 @ s2).astype(complex)).real.sum()
    expected = ((m1 - m2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * trace_sqrt
    assert fid.compute() == pytest.approx(expected, rel=1e-4)
    same = METRICS["fid"](options)
    same.update(real, real=True)
    same.update(real, real=False)
    assert same.compute() == pytest.approx(0.0, abs=1e-6)


def test_fid_inception_from_a_local_weights_file(tmp_path, models):
    weights = save_inception(tmp_path / "inception.safetensors")
    fid = METRICS["fid"](MetricOptions(fid_weights=str(weights)))
    fid.update([noise(40), noise(41, size=(24, 24))], real=True)  # two sizes: both resized to 299
    assert int(fid.fid.real_features_num_samples) == 2
    features = fid.fid.inception(torch.from_numpy(np.array(noise(40))).permute(2, 0, 1)[None])
    assert features.shape == (1, 2048) and torch.isfinite(features).all()
    # (the Fréchet arithmetic itself is checked in DINOv2 space above: a 2048-d eigendecomposition is slow on CPU)
    with pytest.raises(UserError, match="not the FID Inception-v3 weights"):
        METRICS["fid"](MetricOptions(fid_weights=str(models["aesthetic"])))
    with pytest.raises(UserError, match="--fid-weights FILE is required"):
        METRICS["fid"](MetricOptions())


def test_pth_weights_convert_once_to_safetensors(tmp_path):
    from safetensors.torch import load_file

    from omnideft.eval.metrics.weights import convert_pth, main

    state = {"layers.0.weight": torch.randn(3, 8), "layers.0.bias": torch.randn(3)}
    torch.save(state, tmp_path / "head.pth")
    with pytest.raises(UserError, match="convert a .pth once"):
        METRICS["aesthetic"](MetricOptions(aesthetic_model=str(tmp_path / "head.pth")))
    out = convert_pth(str(tmp_path / "head.pth"), str(tmp_path / "head.safetensors"))
    assert all(torch.equal(load_file(str(out))[k], v) for k, v in state.items())
    torch.save({"w": torch.zeros(1), "obj": UserError("not a tensor")}, tmp_path / "unsafe.pth")
    assert main([str(tmp_path / "unsafe.pth"), str(tmp_path / "unsafe.safetensors")]) == 2
    assert not (tmp_path / "unsafe.safetensors").exists()


def test_bad_metric_names_and_model_folders_are_one_line_errors(tmp_path, models, options):
    with pytest.raises(UserError, match="unknown metric 'clip_x'; known: clip_i"):
        parse_metrics("clip_i,clip_x")
    assert parse_metrics(" ssim, psnr ,ssim") == ["ssim", "psnr"]
    broken = save_clip(tmp_path / "clip")
    (broken / "preprocessor_config.json").unlink()
    with pytest.raises(UserError, match=r"--clip-model .*lacks preprocessor_config.json or processor_config.json"):
        METRICS["clip_i"](MetricOptions(clip_model=str(broken)))
    with pytest.raises(UserError, match="a vit model, expected clip"):
        METRICS["clip_i"](MetricOptions(clip_model=str(models["dino"])))
    with pytest.raises(UserError, match="not in the local Hugging Face cache"):
        METRICS["dino_v2"](MetricOptions(dinov2_model="nobody/no-such-model"))
    with pytest.raises(UserError, match="--aesthetic-model FILE is required"):
        METRICS["aesthetic"](MetricOptions(aesthetic_clip_model=str(models["clip"])))
    wide = save_aesthetic(tmp_path / "wide.safetensors", dim=12)
    with pytest.raises(UserError, match="expects 12-d CLIP embeddings"):
        METRICS["aesthetic"](MetricOptions(aesthetic_model=str(wide), aesthetic_clip_model=str(models["clip"])))


def test_a_model_and_processor_saved_by_current_transformers_load(tmp_path):
    """What the folder error advises (the model's and its processor's save_pretrained) gives a folder that loads:
    current transformers writes a processor's image settings into processor_config.json, not
    preprocessor_config.json."""
    from transformers import CLIPModel, CLIPProcessor

    from omnideft.eval.metrics.hub import load_model
    from tests.metric_models import _processor, tiny_text_tokenizer

    folder = save_clip(tmp_path / "saved")  # the tiny CLIP's model, tokenizer and image processor, separately
    model = CLIPModel.from_pretrained(folder)
    out = tmp_path / "clip"
    model.save_pretrained(out)
    CLIPProcessor(image_processor=_processor("clip"), tokenizer=tiny_text_tokenizer()).save_pretrained(out)
    assert (out / "processor_config.json").is_file() and not (out / "preprocessor_config.json").exists()
    loaded, processor, tokenizer = load_model("CLIPModel", str(out), "--clip-model", "cpu", ("clip",), True)
    assert processor.crop_size == {"height": 32, "width": 32} and tokenizer("a red cup")["input_ids"][0] == 1
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))
    batch = dict(pred=[noise(5), noise(6)], ref=[noise(7), noise(8)])
    assert score("clip_i", MetricOptions(clip_model=str(out)), **batch) == \
        score("clip_i", MetricOptions(clip_model=str(folder)), **batch)


def test_every_metric_documents_its_formula_and_direction():
    for name, cls in METRICS.items():
        assert cls.name == name and cls.summary and isinstance(cls.higher_is_better, bool)
        assert set(cls.needs) <= set(NEEDS)
        assert all(hasattr(MetricOptions(), s) for s in cls.settings)


def test_docs_describe_every_metric_and_protocol():
    from pathlib import Path

    from omnideft.bench.protocols import PROTOCOLS

    text = (Path(__file__).resolve().parents[1] / "docs" / "eval.md").read_text()
    for name in [*METRICS, *PROTOCOLS]:
        assert f"`{name}`" in text, name
