"""VisualCloze's degradations made with OpenCV: seeded, with VisualCloze's parameters, listed in the docs."""

import itertools
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from data_builders.degradations import (
    DEGRADATIONS,
    RANGES,
    X_DISTORTIONS,
    blur_motion,
    degrade,
    frost_texture,
    multiotsu_thresholds,
)

DOCS = Path(__file__).resolve().parents[2] / "docs" / "builders.md"


def photo(size=(48, 40), seed=0) -> Image.Image:
    """Smooth colour gradients plus a little texture: every degradation visibly changes it."""
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    rng = np.random.default_rng(seed)
    arr = np.stack([40 + 150 * xx / w, 60 + 120 * yy / h, 200 - 100 * xx / w], -1) + rng.normal(0, 6, (h, w, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


@pytest.mark.parametrize("name", sorted(DEGRADATIONS))
def test_seeded_and_changing(name):
    img = photo()
    a = degrade(img, name, np.random.default_rng([7, 3]))
    b = degrade(img, name, np.random.default_rng([7, 3]))
    assert a.tobytes() == b.tobytes()  # rebuilds give the same pixels
    assert a.size == (img.size[::-1] if name in ("rotate90", "rotate270") else img.size) and a.mode == "RGB"
    assert a.tobytes() != img.tobytes()


def test_every_method_and_severity_of_the_x_distortions():
    img = np.asarray(photo())
    for group, fns in X_DISTORTIONS.items():
        for fn, sev in itertools.product(fns, range(1, 6)):
            out = fn(img, sev, np.random.default_rng(0))
            assert out.shape == img.shape and out.dtype == np.uint8, (group, fn.__name__, sev)


def test_parameters_are_visualcloze_ones():
    img = photo()
    x = np.asarray(img, np.float64)
    rng = np.random.default_rng
    # low light scales by U(0.3, 0.4)
    for seed in range(5):
        ratio = np.asarray(degrade(img, "low_light", rng(seed)), np.float64).sum() / x.sum()
        assert 0.3 - 0.005 < ratio < 0.4 + 0.005
    # SRx2 is OpenCV's bicubic down-up on the float image
    f = np.float32(x / 255)
    ref = cv2.resize(cv2.resize(f, (24, 20), interpolation=cv2.INTER_CUBIC), (48, 40), interpolation=cv2.INTER_CUBIC)
    assert np.array_equal(np.asarray(degrade(img, "sr_x2", rng(0))), np.clip(ref * 255, 0, 255).round())
    # the Bayer mosaic keeps one channel per pixel (RGGB)
    m = np.asarray(degrade(img, "mosaic", rng(0)))
    assert (m[0::2, 0::2, 1:] == 0).all() and (m[1::2, 1::2, :2] == 0).all() and (m[0::2, 1::2, [0, 2]] == 0).all()
    # Gaussian noise: sigma U(10, 50) grey levels (before clipping, which mid-range pixels do not reach)
    flat = Image.new("RGB", (64, 64), (128, 128, 128))
    sigmas = [np.asarray(degrade(flat, "gaussian_noise", rng(s)), np.float64).std() for s in range(8)]
    assert min(sigmas) > 9.5 and max(sigmas) < 50.5 and max(sigmas) - min(sigmas) > 5
    # salt and pepper: 5 % of the pixels
    sp = np.asarray(degrade(flat, "salt_and_pepper_noise", rng(1)))
    hit = (sp != 128).any(-1).mean()
    assert 0.04 < hit < 0.06
    # frost at severity 4: 0.65 x image + at most 0.7 grey levels of texture
    fr = np.asarray(degrade(img, "frost", rng(2)), np.float64)
    assert np.abs(fr - 0.65 * x).max() <= 1.0 and frost_texture(40, 48, rng(2)).max() == pytest.approx(1.0)


def test_motion_blur_equals_visualcloze_sum_of_shifted_copies():
    """VisualCloze blurs by adding copies shifted along the angle (edges repeated), weighted by a half Gaussian."""
    img = np.asarray(photo((40, 36)))
    radius, sigma = 10, 5  # severity 2
    angle = np.random.default_rng(0).uniform(-90, 90)  # the first draw blur_motion makes from the same seed
    width = 2 * radius + 1
    k = np.exp(-np.arange(width) ** 2 / (2 * sigma ** 2))
    k /= k.sum()
    py, px = width * math.sin(math.radians(angle)), width * math.cos(math.radians(angle))
    hyp = math.hypot(py, px)
    acc = np.zeros(img.shape, np.float64)
    for i in range(width):
        dy, dx = -math.ceil(i * py / hyp - 0.5), -math.ceil(i * px / hyp - 0.5)
        ys = np.clip(np.arange(img.shape[0]) - dy, 0, img.shape[0] - 1)
        xs = np.clip(np.arange(img.shape[1]) - dx, 0, img.shape[1] - 1)
        acc += k[i] * img[ys][:, xs]
    ours = blur_motion(img, 2, np.random.default_rng(0)).astype(np.float64)
    assert np.abs(ours - np.clip(acc, 0, 255).round()).max() <= 1  # float32 sums: at most one level of rounding


def test_multiotsu_is_the_exhaustive_optimum():
    values = np.concatenate([np.random.default_rng(1).normal(m, 9, 400) for m in (40, 110, 200)]).astype(np.float32)
    hist, edges = np.histogram(values, bins=30, range=(values.min(), values.max()))
    centres = (edges[:-1] + edges[1:]) / 2

    def between(ends):  # classes end at bins ends[k] (inclusive)
        total, start = 0.0, 0
        for end in list(ends) + [29]:
            wgt = hist[start:end + 1].sum()
            total += (hist[start:end + 1] * centres[start:end + 1]).sum() ** 2 / wgt if wgt else 0
            start = end + 1
        return total

    best = max(itertools.combinations(range(29), 2), key=between)
    assert np.allclose(multiotsu_thresholds(values, 3), centres[list(best)])


def test_docs_list_every_degradation_with_its_ranges():
    text = DOCS.read_text()
    missing = [name for name, ranges in RANGES.items() if f"| `{name}` | {ranges} |" not in text]
    assert missing == [] and set(RANGES) == set(DEGRADATIONS)
