"""A synthetic scene with known cameras: a cube with six coloured faces over a two-tone floor/sky, ray-cast with
numpy from cameras on a circle looking at it, written as a COLMAP model with pycolmap (the real format)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

FACE_COLOURS = np.array([[230, 40, 40], [40, 200, 60], [40, 80, 230], [240, 220, 40], [220, 60, 220],
                         [40, 220, 220]], dtype=np.float64)  # -x, +x, -y, +y, -z, +z
RADIUS, HEIGHT = 4.0, 1.6


def look_at(centre: np.ndarray, target=(0.0, 0.0, 0.0), up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """World-to-camera rotation for COLMAP's camera axes (x right, y down, z forward)."""
    z = np.asarray(target, dtype=np.float64) - centre
    z /= np.linalg.norm(z)
    x = np.cross(z, up)
    x /= np.linalg.norm(x)
    return np.stack([x, np.cross(z, x), z])


def circle_pose(angle_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """(R, t) of cam_from_world for a camera on the circle at `angle_deg`, looking at the cube."""
    a = np.deg2rad(angle_deg)
    centre = np.array([RADIUS * np.cos(a), RADIUS * np.sin(a), HEIGHT])
    rot = look_at(centre)
    return rot, -rot @ centre


def render(rot: np.ndarray, t: np.ndarray, size: int, focal: float) -> Image.Image:
    """Ray-cast the unit cube [-1, 1]^3 (slab test); floor below the horizon, sky above."""
    centre = -rot.T @ t
    v, u = np.mgrid[0:size, 0:size] + 0.5
    rays = np.stack([(u - size / 2) / focal, (v - size / 2) / focal, np.ones_like(u)], axis=-1) @ rot
    rays /= np.linalg.norm(rays, axis=-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        t0, t1 = (-1 - centre) / rays, (1 - centre) / rays
    near, far = np.minimum(t0, t1), np.maximum(t0, t1)
    t_near, t_far = near.max(axis=-1), far.min(axis=-1)
    hit = (t_near <= t_far) & (t_far > 0)
    axis = near.argmax(axis=-1)
    positive = np.take_along_axis(rays, axis[..., None], -1)[..., 0] < 0  # the ray enters through the + face
    face = 2 * axis + positive
    shade = 0.6 + 0.4 * np.abs(np.take_along_axis(rays, axis[..., None], -1)[..., 0])
    sky = np.where(rays[..., 2:3] > 0, [[150.0, 190.0, 235.0]], [[110.0, 90.0, 70.0]])
    img = np.where(hit[..., None], FACE_COLOURS[face] * shade[..., None], sky)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def write_scene(root: Path, angles: list[float], size: int = 32, focal: float = 36.0) -> None:
    """root/sparse (COLMAP text model, SIMPLE_PINHOLE) + root/images/view_NNN.png, one view per angle."""
    import pycolmap

    (root / "sparse").mkdir(parents=True)
    (root / "images").mkdir()
    rec = pycolmap.Reconstruction()
    rec.add_camera_with_trivial_rig(pycolmap.Camera(model="SIMPLE_PINHOLE", width=size, height=size,
                                                    params=[focal, size / 2, size / 2], camera_id=1))
    for i, angle in enumerate(angles):
        rot, t = circle_pose(angle)
        name = f"view_{i:03d}.png"
        render(rot, t, size, focal).save(root / "images" / name)
        pose = pycolmap.Rigid3d(pycolmap.Rotation3d(rot), t)
        rec.add_image_with_trivial_frame(pycolmap.Image(name=name, camera_id=1, image_id=i + 1), pose)
    rec.write_text(str(root / "sparse"))
