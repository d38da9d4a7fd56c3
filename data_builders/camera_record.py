"""Contract 1 camera records and the 11-number camera vector the model sees.

vector = [fx/W, fy/H, cx/W, cy/H, qw, qx, qy, qz, tx/s, ty/s, tz/s]

* fx, fy, cx, cy: the pinhole part of the COLMAP camera (models with one focal length use f for fx and fy);
  W, H: the COLMAP camera's width and height, so the numbers do not change when the image is resized.
* q = (qw, qx, qy, qz): rotation of cam_from_world (COLMAP's world-to-camera pose, x_cam = R X + t), Hamilton,
  unit norm, sign chosen so qw >= 0 (q and -q are the same rotation).
* t / s: translation of cam_from_world divided by the scene scale s = median distance of the registered camera
  centres from their centroid (1 when degenerate). Scaling the world by 1/s scales t by 1/s and leaves R alone.
Distortion parameters are not in the vector; they stay in `params`.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

CONVENTION = "colmap_cam_from_world"
SCALE_KIND = "median_camera_centre_distance_from_centroid"
# Indices of (fx, fy, cx, cy) in each COLMAP model's params; a repeated index means one shared focal length.
PINHOLE_PARAM_INDEX: dict[str, tuple[int, int, int, int]] = {
    "SIMPLE_PINHOLE": (0, 0, 1, 2), "PINHOLE": (0, 1, 2, 3), "SIMPLE_RADIAL": (0, 0, 1, 2),
    "RADIAL": (0, 0, 1, 2), "OPENCV": (0, 1, 2, 3), "OPENCV_FISHEYE": (0, 1, 2, 3), "FULL_OPENCV": (0, 1, 2, 3),
    "FOV": (0, 1, 2, 3), "SIMPLE_RADIAL_FISHEYE": (0, 0, 1, 2), "RADIAL_FISHEYE": (0, 0, 1, 2),
    "THIN_PRISM_FISHEYE": (0, 1, 2, 3), "RAD_TAN_THIN_PRISM_FISHEYE": (0, 1, 2, 3), "SIMPLE_DIVISION": (0, 0, 1, 2),
    "DIVISION": (0, 1, 2, 3), "SIMPLE_FISHEYE": (0, 0, 1, 2), "FISHEYE": (0, 1, 2, 3), "EUCM": (0, 1, 2, 3),
}
UNSUPPORTED_MODELS = {
    "EQUIRECTANGULAR": "a spherical panorama has no focal length or principal point",
}


def unsupported_reason(model: str) -> str | None:
    if model in PINHOLE_PARAM_INDEX:
        return None
    return UNSUPPORTED_MODELS.get(model, "unknown camera model") + \
        f"; supported: {', '.join(PINHOLE_PARAM_INDEX)}"


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


def camera_vector(model: str, params: Sequence[float], width: int, height: int, q_wxyz: Sequence[float],
                  t: Sequence[float], scale: float) -> list[float]:
    ifx, ify, icx, icy = PINHOLE_PARAM_INDEX[model]
    intr = [params[ifx] / width, params[ify] / height, params[icx] / width, params[icy] / height]
    return [float(x) for x in intr] + canonical_quaternion(q_wxyz) + [float(x) / scale for x in t]


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
            "layout": "fx/W fy/H cx/W cy/H qw qx qy qz tx/s ty/s tz/s",
            "intrinsics": "divided by the COLMAP camera width W and height H",
            "quaternion": "cam_from_world, w x y z, unit, qw >= 0",
            "scale": float(scale),
            "scale_kind": SCALE_KIND,
        },
    }


def vector_to_pinhole(vector: Sequence[float], width: int, height: int, scale: float):
    """Invert the vector: (fx, fy, cx, cy), q_wxyz, t — for readers and tests."""
    fx, fy, cx, cy = vector[0] * width, vector[1] * height, vector[2] * width, vector[3] * height
    return (fx, fy, cx, cy), list(vector[4:8]), [v * scale for v in vector[8:11]]


def quaternion_angle(a: Sequence[float], b: Sequence[float]) -> float:
    """Angle in radians between two rotations given as quaternions (sign-insensitive)."""
    dot = abs(float(np.dot(np.asarray(a) / np.linalg.norm(a), np.asarray(b) / np.linalg.norm(b))))
    return 2 * math.acos(min(1.0, dot))
