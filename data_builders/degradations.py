"""VisualCloze's 32 restoration degradations, made with OpenCV with VisualCloze's parameters and ranges.

Re-implemented from VisualCloze's `data/degradation_utils.py` and `data/degradation_toolkit/` (which need torch,
scikit-image, scipy and numba), with OpenCV (and PIL where VisualCloze uses PIL), so restoration shards have the
distribution the paper trained on. Every random choice comes from the numpy Generator the builder seeds per
sample from (--seed, sample index), so a rebuild gives the same bytes; VisualCloze draws from the global `random`
and `np.random` instead. Names are lower_snake_case versions of VisualCloze's (`SRx2` -> `sr_x2`,
`contrast_strengthen` -> `contrast_up`, `SPNoise` -> `salt_and_pepper_noise`).

VisualCloze runs three pipelines, kept here: its "x_distortion" group (blur, compression, brightness, contrast,
saturation, oversharpen, pixelate, quantization) draws a severity 1-5 (at most 3 for compression and quantization)
and one of several methods, each with a table of five values; its second group works on float images in [0, 1]
with parameters drawn from ranges; its third group has fixed parameters. `RANGES` states each one; docs/builders.md
lists them. Where this file departs from VisualCloze it says so next to the code:

* frost: VisualCloze blends one of six frost photographs that it ships; they are not ours to copy, so a seeded
  procedural frost texture takes their place. VisualCloze calls its frost on 0-255 pixels with a texture in [0, 1]
  (`0.65 * x + 0.7 * frost`), so the texture moves a pixel by at most 0.7 of a grey level: the result is the image
  darkened to 65 %, which this reproduces exactly.
* blur_zoom and elastic use OpenCV's resize/remap where VisualCloze uses scipy's zoom and map_coordinates (same
  interpolation order and border rule; sample positions may differ by rounding).
* quantization_otsu finds the same multi-level Otsu thresholds as scikit-image (30 bins), by dynamic programming.
* rain: VisualCloze also crops the image to multiples of 4 pixels; here the size is kept (cells are multiples of
  16 already).
"""

from __future__ import annotations

import io
import math
from typing import Callable

import cv2
import numpy as np
from PIL import Image, ImageEnhance

Degrade = Callable[[np.ndarray, np.random.Generator], np.ndarray]  # uint8 RGB H x W x 3 -> uint8 RGB

# -- conversions as VisualCloze does them ---------------------------------------------------------------------


def to_float(img: np.ndarray) -> np.ndarray:
    return np.float32(img / 255.0)


def to_uint8(img: np.ndarray) -> np.ndarray:
    """single2uint: clip to [0, 1], scale, round."""
    return np.uint8((np.clip(img, 0, 1) * 255.0).round())


def severity(rng: np.random.Generator, cap: int = 5) -> int:
    return min(cap, int(rng.integers(1, 6)))


def pick(rng: np.random.Generator, options: list):
    return options[int(rng.integers(len(options)))]


# -- blur (x_distortion): severity 1-5 and one of six methods ---------------------------------------------------


def _gaussian(img: np.ndarray, sigma: float, truncate: float = 4.0, border=cv2.BORDER_REPLICATE) -> np.ndarray:
    """scikit-image's `gaussian` (truncate 4, mode nearest) with OpenCV."""
    radius = int(truncate * sigma + 0.5)
    return cv2.GaussianBlur(img, (2 * radius + 1, 2 * radius + 1), sigma, borderType=border)


def blur_gaussian(img, sev, rng):
    return to_uint8(_gaussian(to_float(img), [1, 2, 3, 4, 5][sev - 1]))


def blur_motion(img, sev, rng):
    radius, sigma = [(5, 3), (10, 5), (15, 7), (15, 9), (20, 12)][sev - 1]
    angle = rng.uniform(-90, 90)
    width = 2 * radius + 1
    weights = np.exp(-np.arange(width) ** 2 / (2 * sigma ** 2))
    weights /= weights.sum()
    py, px = width * math.sin(math.radians(angle)), width * math.cos(math.radians(angle))
    hyp = math.hypot(py, px)
    # the weighted sum of shifted copies (edges repeated) is one correlation with a kernel of those offsets
    kernel = np.zeros((2 * width + 1, 2 * width + 1), np.float32)
    for i in range(width):
        dy, dx = -math.ceil(i * py / hyp - 0.5), -math.ceil(i * px / hyp - 0.5)
        if abs(dy) >= img.shape[0] or abs(dx) >= img.shape[1]:
            break  # the motion left the image
        kernel[width - dy, width - dx] += weights[i]
    out = cv2.filter2D(img.astype(np.float32), -1, kernel, borderType=cv2.BORDER_REPLICATE)
    return np.uint8(np.clip(out, 0, 255).round())


def _shuffle_pixels(img: np.ndarray, shift: int, iterations: int, rng: np.random.Generator) -> np.ndarray:
    """Swap each pixel with a random neighbour within `shift`, bottom-right to top-left, as VisualCloze does (with
    numba); the swaps run on pixel indices in plain Python lists and the pixels are gathered once (glass blur at
    severity 5 on 512 x 512: 0.7 s, against 4.6 s swapping the array's pixels)."""
    h, w = img.shape[:2]
    order = list(range(h * w))
    for _ in range(iterations):
        rows, cols = range(h - shift, shift, -1), range(w - shift, shift, -1)
        offsets = rng.integers(-shift, shift, size=(len(rows) * len(cols), 2)).tolist()
        n = 0
        for y in rows:
            for x in cols:
                dx, dy = offsets[n]
                n += 1
                a, b = y * w + x, (y + dy) * w + x + dx
                order[a], order[b] = order[b], order[a]
    return img.reshape(h * w, -1)[order].reshape(img.shape)


def blur_glass(img, sev, rng):
    sigma, shift, iterations = [(0.7, 1, 1), (0.9, 2, 1), (1.2, 2, 2), (1.4, 3, 2), (1.6, 4, 2)][sev - 1]
    x = _gaussian(to_float(img).astype(np.float64), sigma)
    x = _shuffle_pixels(x, shift, iterations, rng)
    return to_uint8(_gaussian(x, sigma))


def _disk(radius: float) -> np.ndarray:
    span = np.arange(-8, 9) if radius <= 8 else np.arange(-radius, radius + 1)
    xx, yy = np.meshgrid(span, span)
    disk = ((xx ** 2 + yy ** 2) <= radius ** 2).astype(np.float32)
    return disk / disk.sum()


def blur_lens(img, sev, rng):
    return to_uint8(cv2.filter2D(to_float(img), -1, _disk([2, 3, 4, 6, 8][sev - 1])))


def _clipped_zoom(img: np.ndarray, factor: float) -> np.ndarray:
    h, w = img.shape[:2]
    ch, cw = int(np.ceil(h / factor)), int(np.ceil(w / factor))
    top, left = (h - ch) // 2, (w - cw) // 2
    crop = img[top:top + ch, left:left + cw]
    zoomed = cv2.resize(crop, (int(round(cw * factor)), int(round(ch * factor))), interpolation=cv2.INTER_LINEAR)
    out = np.zeros_like(img)
    zh, zw = min(h, zoomed.shape[0]), min(w, zoomed.shape[1])
    out[:zh, :zw] = zoomed[:zh, :zw]
    return out


def blur_zoom(img, sev, rng):
    top = [1.03, 1.06, 1.10, 1.15, 1.21][sev - 1]
    x = to_float(img)
    acc = np.zeros_like(x)
    factors = np.arange(1, top, 0.02)
    for factor in factors:
        acc += _clipped_zoom(x, factor)
    return to_uint8((x + acc) / (len(factors) + 1))


def blur_jitter(img, sev, rng):
    return _shuffle_pixels(img, [1, 2, 3, 4, 5][sev - 1], 1, rng)


# -- compression (x_distortion, severity <= 3) ------------------------------------------------------------------


def _pil_roundtrip(img: np.ndarray, **save) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, **save)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def compression_jpeg(img, sev, rng):
    return _pil_roundtrip(img, format="JPEG", quality=[25, 18, 12, 8, 5][sev - 1])


def compression_jpeg_2000(img, sev, rng):
    return _pil_roundtrip(img, format="JPEG2000", quality_mode="dB", quality_layers=[[29, 27.5, 26, 24.5, 23][sev - 1]])


# -- brightness (x_distortion) ------------------------------------------------------------------------------------


def _shift_hsv(img, c):
    hsv = cv2.cvtColor(to_float(img), cv2.COLOR_RGB2HSV)
    hsv[:, :, 2] += c
    return np.uint8(np.clip(cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB), 0, 1) * 255.0)


def _shift_rgb(img, c):
    return np.uint8(np.clip(to_float(img) + c, 0, 1) * 255.0)


def _gamma_rgb(img, gamma):
    return np.uint8(np.clip((img / 255.0) ** gamma, 0, 1) * 255.0)


def _gamma_hsv(img, gamma):
    hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV) / 255.0
    hsv[:, :, 2] = hsv[:, :, 2] ** gamma
    return cv2.cvtColor(np.uint8(np.clip(hsv, 0, 1) * 255.0), cv2.COLOR_HSV2RGB)


def brighten(img, sev, rng):
    method = pick(rng, ["shift_hsv", "shift_rgb", "gamma_hsv", "gamma_rgb"])
    if method == "shift_hsv":
        return _shift_hsv(img, [0.1, 0.2, 0.3, 0.4, 0.5][sev - 1])
    if method == "shift_rgb":
        return _shift_rgb(img, [0.1, 0.15, 0.2, 0.27, 0.35][sev - 1])
    if method == "gamma_hsv":
        return _gamma_hsv(img, [0.7, 0.58, 0.47, 0.36, 0.25][sev - 1])
    return _gamma_rgb(img, [0.8, 0.7, 0.6, 0.45, 0.3][sev - 1])


def darken(img, sev, rng):
    method = pick(rng, ["shift_hsv", "shift_rgb", "gamma_hsv", "gamma_rgb"])
    if method == "shift_hsv":
        return _shift_hsv(img, -[0.1, 0.2, 0.3, 0.4, 0.5][sev - 1])
    if method == "shift_rgb":
        return _shift_rgb(img, -[0.1, 0.15, 0.2, 0.27, 0.35][sev - 1])
    if method == "gamma_hsv":
        return _gamma_hsv(img, [1.5, 1.8, 2.2, 2.7, 3.5][sev - 1])
    return _gamma_rgb(img, [1.4, 1.7, 2.1, 2.6, 3.2][sev - 1])


# -- contrast (x_distortion) ------------------------------------------------------------------------------------


def _contrast_scale(img, c):
    return np.asarray(ImageEnhance.Contrast(Image.fromarray(img)).enhance(c))


def _contrast_stretch(img, c):
    x = img / 255.0
    mean = np.mean(x, axis=(0, 1), keepdims=True)
    return np.uint8(np.clip(1.0 / (1 + (mean / (x + 1e-12)) ** c), 0, 1) * 255)


def contrast_up(img, sev, rng):
    if pick(rng, ["scale", "stretch"]) == "scale":
        return _contrast_scale(img, [1.4, 1.7, 2.1, 2.6, 4.0][sev - 1])
    return _contrast_stretch(img, [2.0, 4.0, 6.0, 8.0, 10.0][sev - 1])


def contrast_down(img, sev, rng):
    if pick(rng, ["scale", "stretch"]) == "scale":
        return _contrast_scale(img, [0.75, 0.6, 0.45, 0.3, 0.2][sev - 1])
    return _contrast_stretch(img, [1.0, 0.9, 0.8, 0.6, 0.4][sev - 1])


# -- saturation (x_distortion) ----------------------------------------------------------------------------------


def _saturate_hsv(img, c):
    hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV).astype(np.float32)
    hsv[:, :, 1] *= c
    return cv2.cvtColor(np.uint8(np.clip(hsv, 0, 255)), cv2.COLOR_HSV2RGB)


def _saturate_ycrcb(img, c):
    ycc = cv2.cvtColor(img, cv2.COLOR_RGB2YCrCb).astype(np.float32)
    ycc[:, :, 1:] = 128 + (ycc[:, :, 1:] - 128) * c
    return cv2.cvtColor(np.uint8(np.clip(ycc, 0, 255)), cv2.COLOR_YCrCb2RGB)


def saturate_up(img, sev, rng):
    if pick(rng, ["hsv", "ycrcb"]) == "hsv":
        return _saturate_hsv(img, [3.0, 6.0, 12.0, 20.0, 64.0][sev - 1])
    return _saturate_ycrcb(img, [2.0, 3.0, 5.0, 8.0, 16.0][sev - 1])


def saturate_down(img, sev, rng):
    if pick(rng, ["hsv", "ycrcb"]) == "hsv":
        return _saturate_hsv(img, [0.7, 0.55, 0.4, 0.2, 0.0][sev - 1])
    return _saturate_ycrcb(img, [0.6, 0.4, 0.2, 0.1, 0.0][sev - 1])


# -- oversharpen, pixelate, quantization (x_distortion) ---------------------------------------------------------


def oversharpen(img, sev, rng):
    amount = [2, 2.8, 4, 6, 8][sev - 1]
    blurred = cv2.GaussianBlur(img, (5, 5), 0)
    return cv2.addWeighted(img, 1 + amount, blurred, -amount, 0)


def pixelate(img, sev, rng):
    c = [0.5, 0.4, 0.3, 0.25, 0.2][sev - 1]
    h, w = img.shape[:2]
    small = Image.fromarray(img).resize((int(w * c), int(h * c)), Image.BOX)
    return np.asarray(small.resize((w, h), Image.NEAREST))


def multiotsu_thresholds(values: np.ndarray, classes: int, nbins: int = 30) -> np.ndarray | None:
    """scikit-image's `threshold_multiotsu(values, classes, nbins)`: the bin centres that split the histogram into
    `classes` runs of bins with the largest between-class variance (sum of S_k^2 / W_k over the runs), found by
    dynamic programming over the bins. None when the values cannot give that many classes."""
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        return None
    hist, edges = np.histogram(values, bins=nbins, range=(lo, hi))
    centres = (edges[:-1] + edges[1:]) / 2
    if np.count_nonzero(hist) < classes:
        return None
    w = np.concatenate([[0.0], np.cumsum(hist, dtype=np.float64)])
    m = np.concatenate([[0.0], np.cumsum(hist * centres, dtype=np.float64)])

    def run_score(i: int, j: int) -> float:  # bins i..j-1 as one class
        weight = w[j] - w[i]
        return (m[j] - m[i]) ** 2 / weight if weight > 0 else 0.0

    best = np.full((classes + 1, nbins + 1), -np.inf)
    came = np.zeros((classes + 1, nbins + 1), dtype=int)
    best[0, 0] = 0.0
    for k in range(1, classes + 1):
        for j in range(k, nbins - (classes - k) + 1):
            for i in range(k - 1, j):
                score = best[k - 1, i] + run_score(i, j)
                if score > best[k, j]:
                    best[k, j], came[k, j] = score, i
    cuts, j = [], nbins
    for k in range(classes, 0, -1):
        j = came[k, j]
        cuts.append(j)
    ends = sorted(cuts)[1:]  # class k ends at bin ends[k] - 1; skimage's threshold is that bin's centre
    return centres[np.asarray(ends) - 1]


def quantization(img, sev, rng):
    method = pick(rng, ["otsu", "median", "hist"])
    if method == "otsu":
        c = [15, 11, 8, 5, 3][sev - 1]
        out = img.astype(np.float32)
        for ch in range(3):
            thresholds = multiotsu_thresholds(out[:, :, ch], c)
            if thresholds is None:
                continue  # too few distinct values: scikit-image refuses; the channel stays as it is
            v_min, v_max = out[:, :, ch].min(), out[:, :, ch].max()
            out[:, :, ch] = np.digitize(out[:, :, ch], bins=thresholds) * (v_max - v_min) / c + v_min
        return np.uint8(np.clip(out, 0, 255).round())  # VisualCloze's float result is rounded on the way out
    if method == "median":
        c = [20, 15, 10, 6, 3][sev - 1]
        out = img.copy()
        for ch in range(3):
            out[:, :, ch] = np.asarray(Image.fromarray(img[:, :, ch]).quantize(colors=c, method=Image.Quantize
                                                                                .MEDIANCUT).convert("L"))
        return out
    c = [24, 16, 8, 6, 4][sev - 1]
    hist, _ = np.histogram(img.flatten(), bins=c, range=[0, 255])
    cdf = np.ma.masked_equal(hist.cumsum(), 0)
    cdf = (cdf - cdf.min()) * 255 / (cdf.max() - cdf.min())
    lut = np.ma.filled(cdf, 0).astype(np.uint8)
    return lut[np.uint8(np.round(img / 255 * (c - 1)))]


X_DISTORTIONS: dict[str, list[Callable]] = {
    "blur": [blur_gaussian, blur_motion, blur_glass, blur_lens, blur_zoom, blur_jitter],
    "compression": [compression_jpeg, compression_jpeg_2000],
    "brighten": [brighten], "darken": [darken], "contrast_up": [contrast_up], "contrast_down": [contrast_down],
    "saturate_up": [saturate_up], "saturate_down": [saturate_down], "oversharpen": [oversharpen],
    "pixelate": [pixelate], "quantization": [quantization],
}
SEVERITY_CAP = {"compression": 3, "quantization": 3}


def x_distortion(name: str) -> Degrade:
    def run(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        sev = severity(rng, SEVERITY_CAP.get(name, 5))
        return pick(rng, X_DISTORTIONS[name])(img, sev, rng)
    return run


# -- the second group: float images in [0, 1], parameters from ranges -------------------------------------------


def float_op(fn: Callable[[np.ndarray, np.random.Generator], np.ndarray]) -> Degrade:
    """Run `fn` on the float image; round and clip the result as VisualCloze does."""
    return lambda img, rng: np.clip(fn(to_float(img), rng) * 255, 0, 255).round().astype(np.uint8)


def _rain(x, rng):
    value = rng.uniform(40, 200)
    h, w = x.shape[:2]
    noise = rng.uniform(0, 256, (h, w))
    noise[noise < 256 - value * 0.01] = 0
    noise = cv2.filter2D(noise, -1, np.array([[0, 0.1, 0], [0.1, 8, 0.1], [0, 0.1, 0]]))
    width = pick(rng, [3, 5, 7, 9, 11])
    length = int(rng.integers(30, 41))
    angle = int(rng.integers(-45, 45))
    rotation = cv2.getRotationMatrix2D((length / 2, length / 2), angle - 45, 1 - length / 100.0)
    kernel = cv2.warpAffine(np.diag(np.ones(length)), rotation, (length, length))
    kernel = cv2.GaussianBlur(kernel, (width, width), 0)
    streaks = cv2.filter2D(noise, -1, kernel)
    cv2.normalize(streaks, streaks, 0, 255, cv2.NORM_MINMAX)
    rain = np.repeat(np.uint8(streaks)[..., None], 3, 2)
    return np.clip(x * 255 + rain, 0, 255) / 255.0


def _inpainting(x, rng):
    lines, thickness = int(rng.integers(20, 51)), int(rng.integers(10, 21))
    h, w = x.shape[:2]
    colour = pick(rng, ["white", "black"])
    mask = np.zeros((h, w, 3), np.uint8)
    for _ in range(lines):
        x1, y1, x2, y2 = (int(v) for v in rng.integers(0, [w + 1, h + 1, w + 1, h + 1]))
        mask = cv2.polylines(mask, [np.array([[x1, y1], [x2, y2]], np.int32).reshape(-1, 1, 2)], False,
                             (1, 1, 1), thickness)
    return np.clip(x + mask, 0, 1) if colour == "white" else np.clip(x - mask, 0, 1)


def _bayer_mosaic(x, rng):
    """The RGGB colour-filter-array image, not demosaicked: each pixel keeps only its filter's channel."""
    mask = np.zeros(x.shape, bool)
    mask[0::2, 0::2, 0] = mask[0::2, 1::2, 1] = mask[1::2, 0::2, 1] = mask[1::2, 1::2, 2] = True
    return to_float(to_uint8(x) * mask)


def _down_up(x, factor):
    h, w = x.shape[:2]
    small = cv2.resize(x, (w // factor, h // factor), interpolation=cv2.INTER_CUBIC)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


def _jpeg(x, rng):
    # VisualCloze hands its RGB array to cv2.imencode, which takes it for BGR: the chroma planes are computed with
    # red and blue swapped. Kept, so the artefacts are VisualCloze's.
    ok, data = cv2.imencode(".jpg", to_uint8(x), [int(cv2.IMWRITE_JPEG_QUALITY), int(rng.integers(10, 41))])
    return to_float(cv2.imdecode(data, cv2.IMREAD_COLOR))


def _salt_pepper(x, rng):
    h, w = x.shape[:2]
    hit = rng.random((h, w)) >= 0.95  # snr 0.95
    salt = rng.random((h, w)) < 0.5
    out = x.copy()
    out[hit & salt] = 1.0
    out[hit & ~salt] = 0.0
    return out


def _gray(x, rng):
    # cv2's BGR2GRAY on RGB data, as VisualCloze calls it (red and blue weights swapped)
    g = cv2.cvtColor(x, cv2.COLOR_BGR2GRAY)
    return np.repeat(g[..., None], 3, 2)


def _color_distortion(x, rng):
    if rng.random() < 0.5:
        return x[..., rng.permutation(3)]
    out = x.copy()
    channel = int(rng.integers(0, 3))
    out[..., channel] = 0 if rng.random() < 0.5 else 1
    return out


# -- the third group: fixed parameters --------------------------------------------------------------------------


def _defocus(x, rng):
    """disk(radius 3, alias_blur 0.2): the aliased disk on a 17 x 17 grid smoothed by a 3 x 3 Gaussian."""
    kernel = cv2.GaussianBlur(_disk(3), (3, 3), 0.2)
    return np.clip(cv2.filter2D(x, -1, kernel), 0, 1)


def _radial(x, k1, k2):
    h, w = x.shape[:2]
    mx, my = np.meshgrid(np.arange(w), np.arange(h))
    mx, my = 2 * mx / (w - 1) - 1, 2 * my / (h - 1) - 1
    r2 = mx ** 2 + my ** 2
    factor = 1 + k1 * r2 + k2 * r2 ** 2
    mx, my = (mx * factor + 1) * (w - 1) / 2, (my * factor + 1) * (h - 1) / 2
    return cv2.remap(x, mx.astype(np.float32), my.astype(np.float32), cv2.INTER_LINEAR)


def _elastic(x, rng):
    """Severity 4: alpha 25, smoothing sigma 1 % of the size (truncate 3), offsets up to 0.5 % of the height."""
    h, w = x.shape[:2]
    alpha, max_d = 250 * 0.1, h * 0.005
    sy, sx = h * 0.01, w * 0.01

    def field():
        raw = rng.uniform(-max_d, max_d, size=(h, w))
        ky, kx = 2 * int(3 * sy + 0.5) + 1, 2 * int(3 * sx + 0.5) + 1
        return (cv2.GaussianBlur(raw, (kx, ky), sigmaX=sx, sigmaY=sy, borderType=cv2.BORDER_REFLECT) * alpha)

    dx, dy = field().astype(np.float32), field().astype(np.float32)
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return np.clip(cv2.remap(x, gx + dx, gy + dy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT), 0, 1)


def frost_texture(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A seeded ice-crystal texture in [0, 1] (sparse specks drawn out into needles at one random angle), standing
    in for VisualCloze's frost photographs."""
    specks = (rng.random((h, w)) > 0.97).astype(np.float32)
    angle = rng.uniform(0, np.pi)
    needle = np.zeros((9, 9), np.float32)
    dx, dy = 4 * np.cos(angle), 4 * np.sin(angle)
    cv2.line(needle, (int(round(4 - dx)), int(round(4 - dy))), (int(round(4 + dx)), int(round(4 + dy))), 1.0)
    frost = cv2.GaussianBlur(cv2.filter2D(specks, -1, needle / needle.sum()), (0, 0), 1)
    return frost / max(float(frost.max()), 1e-6)


def _frost(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Severity 4: 0.65 * image + 0.7 * frost, with the image in 0-255 and the frost in [0, 1] (see the module
    docstring), then divided by 255."""
    h, w = img.shape[:2]
    texture = frost_texture(h, w, rng)[..., None]
    return to_uint8((0.65 * img.astype(np.float64) + 0.7 * texture) / 255.0)


def fixed_op(fn: Callable[[np.ndarray, np.random.Generator], np.ndarray]) -> Degrade:
    def run(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        out = fn(to_float(img), rng)
        # VisualCloze keeps the clean image when a degradation leaves nothing (mean 0 in float16)
        return img.copy() if np.float16(np.mean(out)) == 0 else to_uint8(out)
    return run


def rotate(k: int) -> Degrade:
    return lambda img, rng: np.ascontiguousarray(np.rot90(img, k=k))


DEGRADATIONS: dict[str, Degrade] = {
    "blur": x_distortion("blur"),
    "compression": x_distortion("compression"),
    "sr_x2": float_op(lambda x, r: _down_up(x, 2)),
    "sr_x4": float_op(lambda x, r: _down_up(x, 4)),
    "pixelate": x_distortion("pixelate"),
    "defocus": fixed_op(_defocus),
    "gaussian_blur": float_op(lambda x, r: cv2.GaussianBlur(x, (15, 15), r.uniform(2, 4))),
    "oversharpen": x_distortion("oversharpen"),
    "gaussian_noise": float_op(lambda x, r: np.clip(x + r.normal(0, 1, x.shape) * r.uniform(10, 50) / 255, 0, 1)),
    "poisson_noise": float_op(lambda x, r: np.clip(r.poisson(x * 100).astype(np.float32) / 100, 0, 1)),
    "salt_and_pepper_noise": float_op(_salt_pepper),
    "mosaic": float_op(_bayer_mosaic),
    "contrast_up": x_distortion("contrast_up"),
    "contrast_down": x_distortion("contrast_down"),
    "quantization": x_distortion("quantization"),
    "jpeg": float_op(_jpeg),
    "brighten": x_distortion("brighten"),
    "darken": x_distortion("darken"),
    "low_light": float_op(lambda x, r: x * r.uniform(0.3, 0.4)),
    "saturate_up": x_distortion("saturate_up"),
    "saturate_down": x_distortion("saturate_down"),
    "gray": float_op(_gray),
    "color_distortion": float_op(_color_distortion),
    "inpainting": float_op(_inpainting),
    "rotate90": rotate(1),
    "rotate180": rotate(2),
    "rotate270": rotate(3),
    "barrel": fixed_op(lambda x, r: _radial(x, 0.1, 0.05)),
    "pincushion": fixed_op(lambda x, r: _radial(x, -0.1, -0.05)),
    "elastic": fixed_op(_elastic),
    "rain": float_op(_rain),
    "frost": _frost,
}

# What each draws, as docs/builders.md lists it (tests check the two agree). sev = severity, uniform in 1-5.
RANGES: dict[str, str] = {
    "blur": "sev 1-5; one of: gaussian sigma 1-5; motion radius/sigma (5,3) (10,5) (15,7) (15,9) (20,12), angle "
            "U(-90,90); glass sigma/shift/iterations (0.7,1,1) (0.9,2,1) (1.2,2,2) (1.4,3,2) (1.6,4,2); lens disk "
            "radius 2 3 4 6 8; zoom factors 1..1.03/1.06/1.10/1.15/1.21 step 0.02; jitter shift 1-5",
    "compression": "sev 1-3; JPEG quality 25 18 12, or JPEG 2000 at 29 27.5 26 dB",
    "sr_x2": "bicubic down to 1/2 and back up",
    "sr_x4": "bicubic down to 1/4 and back up",
    "pixelate": "sev 1-5; box-filter down to 0.5 0.4 0.3 0.25 0.2 of the size, nearest back up",
    "defocus": "disk radius 3 anti-aliased by a 3x3 Gaussian (sigma 0.2)",
    "gaussian_blur": "15x15 window, sigma U(2,4)",
    "oversharpen": "sev 1-5; unsharp mask amount 2 2.8 4 6 8 over a 5x5 Gaussian",
    "gaussian_noise": "sigma U(10,50) / 255 per value",
    "poisson_noise": "Poisson with 100 counts at full scale",
    "salt_and_pepper_noise": "5 % of the pixels, half white, half black",
    "mosaic": "RGGB Bayer colour-filter array, not demosaicked",
    "contrast_up": "sev 1-5; PIL contrast 1.4 1.7 2.1 2.6 4.0, or sigmoid stretch 2 4 6 8 10",
    "contrast_down": "sev 1-5; PIL contrast 0.75 0.6 0.45 0.3 0.2, or sigmoid stretch 1.0 0.9 0.8 0.6 0.4",
    "quantization": "sev 1-3; multi-Otsu 15 11 8 levels per channel, median cut 20 15 10 colours per channel, or "
                    "histogram equalisation to 24 16 8 levels",
    "jpeg": "OpenCV JPEG quality U{10..40}",
    "brighten": "sev 1-5; one of: HSV value +0.1 +0.2 +0.3 +0.4 +0.5; RGB +0.1 +0.15 +0.2 +0.27 +0.35; HSV value "
                "gamma 0.7 0.58 0.47 0.36 0.25; RGB gamma 0.8 0.7 0.6 0.45 0.3",
    "darken": "sev 1-5; one of: HSV value -0.1 -0.2 -0.3 -0.4 -0.5; RGB -0.1 -0.15 -0.2 -0.27 -0.35; HSV value "
              "gamma 1.5 1.8 2.2 2.7 3.5; RGB gamma 1.4 1.7 2.1 2.6 3.2",
    "low_light": "values times U(0.3,0.4)",
    "saturate_up": "sev 1-5; HSV saturation x3 x6 x12 x20 x64, or YCrCb chroma x2 x3 x5 x8 x16",
    "saturate_down": "sev 1-5; HSV saturation x0.7 x0.55 x0.4 x0.2 x0, or YCrCb chroma x0.6 x0.4 x0.2 x0.1 x0",
    "gray": "OpenCV BGR2GRAY weights on the RGB values (as VisualCloze calls it)",
    "color_distortion": "half: the channels permuted; half: one channel set to 0 or to 1",
    "inpainting": "U{20..50} straight strokes U{10..20} px thick between random points, all white or all black",
    "rotate90": "90 degrees counter-clockwise",
    "rotate180": "180 degrees",
    "rotate270": "270 degrees counter-clockwise",
    "barrel": "radial remap k1 0.1, k2 0.05 on coordinates normalised to [-1, 1]",
    "pincushion": "radial remap k1 -0.1, k2 -0.05 on coordinates normalised to [-1, 1]",
    "elastic": "severity 4: alpha 25, offsets U(-0.005 H, 0.005 H) smoothed by sigma 1 % of the size",
    "rain": "drop density U(40,200) / 100 %, streak length U{30..40}, angle U{-45..44}, blur width 3/5/7/9/11",
    "frost": "severity 4: 0.65 x image + 0.7 grey levels of frost texture",
}


def degrade(img: Image.Image, name: str, rng: np.random.Generator) -> Image.Image:
    return Image.fromarray(DEGRADATIONS[name](np.asarray(img.convert("RGB")), rng)).convert("RGB")
