"""The camera record of the shard format and the 11-number camera vector the model sees (numpy only).

vector = [f/W, cx/W, cy/H, k, qw, qx, qy, qz, tx/s, ty/s, tz/s]   (docs/camera.md)

* f: the focal length in pixels (models with fx and fy: their mean); W, H: the COLMAP camera's width and height,
  so the numbers do not change when the image is resized. cx, cy: the principal point.
* k: the first radial distortion coefficient of the model (dimensionless, on normalised image coordinates), 0 for
  models without one. Together f, cx, cy, k are a SIMPLE_RADIAL camera: the paper's 11 parameters.
* q: rotation of cam_from_world (COLMAP's world-to-camera pose, x_cam = R X + t), Hamilton, unit norm, sign chosen
  so qw >= 0 (q and -q are the same rotation).
* t / s: translation of cam_from_world divided by the scene scale s = median distance of the registered camera
  centres from their centroid (1 when degenerate), stored with every record. Scaling the world by 1/s scales t by
  1/s and leaves R alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

CONVENTION = "colmap_cam_from_world"
SCALE_KIND = "median_camera_centre_distance_from_centroid"
VECTOR_FIELDS = ("f", "cx", "cy", "k", "qw", "qx", "qy", "qz", "tx", "ty", "tz")
VECTOR_SIZE = len(VECTOR_FIELDS)
LAYOUT = "f/W cx/W cy/H k qw qx qy qz tx/s ty/s tz/s"


@dataclass(frozen=True)
class ModelLayout:
    """Where a COLMAP model keeps the vector's intrinsics in `params`, and what the vector drops."""

    focal: tuple[int, ...]  # one index (f) or two (fx, fy; the vector keeps their mean)
    cx: int
    cy: int
    k: int | None  # index of the first radial coefficient, None = k is 0
    lost: str


def _layout(focal, cx, cy, k, lost):
    return ModelLayout(tuple(focal), cx, cy, k, lost)


# COLMAP's camera models (src/colmap/sensor/models.h; pycolmap's `params_info`).
MODELS: dict[str, ModelLayout] = {
    "SIMPLE_PINHOLE": _layout([0], 1, 2, None, "nothing"),
    "PINHOLE": _layout([0, 1], 2, 3, None, "fx/fy (pixel aspect)"),
    "SIMPLE_RADIAL": _layout([0], 1, 2, 3, "nothing"),
    "RADIAL": _layout([0], 1, 2, 3, "k2"),
    "OPENCV": _layout([0, 1], 2, 3, 4, "fx/fy, k2, p1, p2"),
    "OPENCV_FISHEYE": _layout([0, 1], 2, 3, 4, "fisheye projection, fx/fy, k2-k4"),
    "FULL_OPENCV": _layout([0, 1], 2, 3, 4, "fx/fy, k2, p1, p2, k3-k6"),
    "FOV": _layout([0, 1], 2, 3, None, "fx/fy, omega (FOV distortion)"),
    "SIMPLE_RADIAL_FISHEYE": _layout([0], 1, 2, 3, "fisheye projection"),
    "RADIAL_FISHEYE": _layout([0], 1, 2, 3, "fisheye projection, k2"),
    "THIN_PRISM_FISHEYE": _layout([0, 1], 2, 3, 4, "fisheye projection, fx/fy, k2-k4, p1, p2, sx1, sy1"),
    "RAD_TAN_THIN_PRISM_FISHEYE": _layout([0, 1], 2, 3, 4, "fisheye projection, fx/fy, k1-k5, p0, p1, s0-s3"),
    "SIMPLE_DIVISION": _layout([0], 1, 2, None, "division coefficient k"),
    "DIVISION": _layout([0, 1], 2, 3, None, "fx/fy, division coefficient k"),
    "SIMPLE_FISHEYE": _layout([0], 1, 2, None, "fisheye projection"),
    "FISHEYE": _layout([0, 1], 2, 3, None, "fisheye projection, fx/fy"),
    "EUCM": _layout([0, 1], 2, 3, None, "fx/fy, alpha, beta (unified camera model)"),
}
UNSUPPORTED_MODELS = {
    "EQUIRECTANGULAR": "a spherical panorama has no focal length or principal point",
}


def unsupported_reason(model: str) -> str | None:
    if model in MODELS:
        return None
    return UNSUPPORTED_MODELS.get(model, "unknown camera model") + f"; supported: {', '.join(MODELS)}"


def scene_scale(centres: Sequence[Sequence[float]]) -> float:
    pts = np.asarray(centres, dtype=np.float64).reshape(-1, 3)
    if len(pts) < 2:
        return 1.0
    s = float(np.median(np.linalg.norm(pts - pts.mean(axis=0), axis=1)))
    return s if s > 1e-12 else 1.0


def canonical_quaternion(q_wxyz: Sequence[float]) -> list[float]:
    q = np.asarray(q_wxyz, dtype=np.float64)
    q = q / np.linalg.norm(q)
    return [float(x) for x in (-q if q[0] < 0 else q)]


def intrinsics(model: str, params: Sequence[float]) -> tuple[float, float, float, float]:
    """(f, cx, cy, k) in pixels (k dimensionless) of any supported COLMAP model."""
    lay = MODELS[model]
    f = float(np.mean([params[i] for i in lay.focal]))
    k = float(params[lay.k]) if lay.k is not None else 0.0
    return f, float(params[lay.cx]), float(params[lay.cy]), k


def camera_vector(model: str, params: Sequence[float], width: int, height: int, q_wxyz: Sequence[float],
                  t: Sequence[float], scale: float) -> list[float]:
    f, cx, cy, k = intrinsics(model, params)
    return [f / width, cx / width, cy / height, k] + canonical_quaternion(q_wxyz) + [float(x) / scale for x in t]


def camera_record(model: str, params: Sequence[float], width: int, height: int, q_wxyz: Sequence[float],
                  t: Sequence[float], scale: float) -> dict:
    """The `camera` field of contract 1 plus `vector` and `normalisation`."""
    return {
        "model": model,
        "params": [float(p) for p in params],
        "width": int(width),
        "height": int(height),
        "q_wxyz": [float(x) for x in q_wxyz],
        "t": [float(x) for x in t],
        "convention": CONVENTION,
        "vector": camera_vector(model, params, width, height, q_wxyz, t, scale),
        "normalisation": {
            "layout": LAYOUT,
            "intrinsics": "f (mean of fx, fy) and cx divided by the COLMAP camera width W, cy by its height H; "
                          "k = first radial coefficient (0 if the model has none)",
            "quaternion": "cam_from_world, w x y z, unit, qw >= 0",
            "scale": float(scale),
            "scale_kind": SCALE_KIND,
        },
    }


def record_vector(record: dict) -> list[float]:
    """The vector of a shard's camera record; recomputed from the record's model, params and pose when the stored
    one has another layout (shards built before this definition) or is missing."""
    norm = record.get("normalisation") or {}
    if "vector" in record and norm.get("layout") == LAYOUT:
        return [float(x) for x in record["vector"]]
    scale = norm.get("scale", 1.0)
    return camera_vector(record["model"], record["params"], record["width"], record["height"], record["q_wxyz"],
                         record["t"], scale)


def vector_to_colmap(vector: Sequence[float], width: int, height: int, scale: float = 1.0) -> dict:
    """Invert the vector into a SIMPLE_RADIAL camera (params f, cx, cy, k in pixels) and a cam_from_world pose."""
    f, cx, cy, k = vector[0] * width, vector[1] * width, vector[2] * height, vector[3]
    return {"model": "SIMPLE_RADIAL", "params": [float(f), float(cx), float(cy), float(k)], "width": int(width),
            "height": int(height), "q_wxyz": [float(x) for x in vector[4:8]],
            "t": [float(v) * scale for v in vector[8:11]]}


def rotation_matrix(q_wxyz: Sequence[float]) -> np.ndarray:
    w, x, y, z = np.asarray(q_wxyz, dtype=np.float64) / np.linalg.norm(q_wxyz)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                     [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                     [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])


def camera_centre(q_wxyz: Sequence[float], t: Sequence[float]) -> np.ndarray:
    """C = -R^T t for the world-to-camera pose."""
    return -rotation_matrix(q_wxyz).T @ np.asarray(t, dtype=np.float64)


def quaternion_angle(a: Sequence[float], b: Sequence[float]) -> float:
    """Angle in radians between two rotations given as quaternions (sign-insensitive)."""
    dot = abs(float(np.dot(np.asarray(a) / np.linalg.norm(a), np.asarray(b) / np.linalg.norm(b))))
    return 2 * math.acos(min(1.0, dot))


def slerp(a: Sequence[float], b: Sequence[float], s: float) -> list[float]:
    """Spherical interpolation of unit quaternions along the shorter arc; the result is canonical (qw >= 0)."""
    qa, qb = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    qa, qb = qa / np.linalg.norm(qa), qb / np.linalg.norm(qb)
    dot = float(np.dot(qa, qb))
    if dot < 0:  # q and -q are the same rotation: take the short way
        qb, dot = -qb, -dot
    if dot > 0.9995:  # nearly equal: lerp is exact enough and avoids dividing by sin(0)
        q = qa + s * (qb - qa)
    else:
        theta = math.acos(dot)
        q = (math.sin((1 - s) * theta) * qa + math.sin(s * theta) * qb) / math.sin(theta)
    return canonical_quaternion(q)


def interpolate_vectors(a: Sequence[float], b: Sequence[float], frames: int) -> list[list[float]]:
    """`frames` vectors from a to b inclusive: slerp the rotation, lerp intrinsics and translation."""
    a, b = [float(x) for x in a], [float(x) for x in b]
    out = []
    for i in range(frames):
        s = i / (frames - 1) if frames > 1 else 0.0
        lerp = [x + s * (y - x) for x, y in zip(a, b)]
        out.append(lerp[:4] + slerp(a[4:8], b[4:8], s) + lerp[8:])
    return out


def transformed_record(record: dict, sx: float, sy: float, x0: float, y0: float, width: int, height: int) -> dict:
    """The record of the same camera after its image was cropped to start at source pixel (x0, y0) and scaled by
    (sx, sy) into a width x height image: a source pixel u lands at (u - x0) * sx. Focal lengths scale, the
    principal point moves with the crop; distortion coefficients (on normalised coordinates) do not change. A model
    with one focal length takes the mean scale (callers keep sx == sy)."""
    lay = MODELS[record["model"]]
    params = [float(p) for p in record["params"]]
    if len(lay.focal) == 1:
        params[lay.focal[0]] *= (sx + sy) / 2
    else:
        params[lay.focal[0]] *= sx
        params[lay.focal[1]] *= sy
    params[lay.cx] = (params[lay.cx] - x0) * sx
    params[lay.cy] = (params[lay.cy] - y0) * sy
    scale = (record.get("normalisation") or {}).get("scale", 1.0)
    return camera_record(record["model"], params, width, height, record["q_wxyz"], record["t"], scale)


# Beyond these a camera is more likely a unit or solver error than a lens: a focal length of 10 widths is a
# ~5 degree field of view, a tenth of the width ~157 degrees (a fisheye, which has its own models).
MAX_FOCAL_WIDTHS = 10.0
MIN_FOCAL_WIDTHS = 0.1
MAX_RADIAL_K = 0.5


def implausible_intrinsics(record: dict) -> list[str]:
    """Warnings (possibly none) about intrinsics no ordinary photo has."""
    f, _, _, k = intrinsics(record["model"], record["params"])
    width, problems = record["width"], []
    if f > MAX_FOCAL_WIDTHS * width or f < MIN_FOCAL_WIDTHS * width:
        problems.append(f"focal length {f:g} px is {f / width:.3g}x the width {width} "
                        f"(expected {MIN_FOCAL_WIDTHS:g}-{MAX_FOCAL_WIDTHS:g}x)")
    if abs(k) > MAX_RADIAL_K and "FISHEYE" not in record["model"]:
        problems.append(f"radial distortion k={k:g} is large (|k| > {MAX_RADIAL_K:g})")
    return problems
