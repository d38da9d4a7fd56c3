"""Read a COLMAP sparse model (text or binary) with pycolmap into camera records, one per registered image.

Shared by `build-sfm` (the records written into shards) and `omnideft generate --camera-from` (the vector of a
named view), so both compute the same scene scale and the same 11 numbers.

The images file is also read here directly (`read_image_entries`), for two things pycolmap 4.2 gets wrong without a
word (both measured): its text reader cuts an image name at the first space ("IMG 0001.jpg" -> "IMG", so six phone
photos become one name), and it normalises a zero or non-unit quaternion into a rotation (0 0 0 0 -> identity).
COLMAP's own text writer puts the name last on the line, so the name is the rest of the line after CAMERA_ID.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from pathlib import Path

from omnideft.camera.record import camera_record, scene_scale, unsupported_reason
from omnideft.errors import UserError

MODEL_FILES = ("cameras", "images")
QUATERNION_NORM_TOLERANCE = 1e-3  # text models written with 6 significant digits (old COLMAP) stay well inside


@dataclass(frozen=True)
class ImageEntry:
    """One image as the images file stores it; `where` names its place ("images.txt line 7")."""

    image_id: int
    q_wxyz: tuple[float, ...]
    t: tuple[float, ...]
    camera_id: int
    name: str
    where: str


def model_format(sparse: Path, flag: str = "--src") -> str:
    if not sparse.is_dir():
        raise UserError(f"{flag} {sparse}: not a directory (expected a COLMAP sparse model such as sparse/0)")
    for ext in ("bin", "txt"):
        if all((sparse / f"{f}.{ext}").is_file() for f in MODEL_FILES):
            return ext
    found = sorted(p.name for p in sparse.iterdir())[:8]
    raise UserError(f"{flag} {sparse}: expected a COLMAP sparse model (cameras.bin + images.bin, or cameras.txt + "
                    f"images.txt), found {found or 'an empty directory'}")


def read_image_entries(sparse: Path, fmt: str, flag: str = "--src") -> list[ImageEntry]:
    """Every image of images.txt / images.bin with its name whole; a line or record that cannot be read is one
    UserError naming the file and line."""
    path = sparse / f"images.{fmt}"
    try:
        return _read_text_images(path) if fmt == "txt" else _read_binary_images(path)
    except (ValueError, struct.error, UnicodeDecodeError) as exc:
        raise UserError(f"{flag} {path}: {exc}") from None


def _read_text_images(path: Path) -> list[ImageEntry]:
    entries = []
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        i += 1
        if not line or line.startswith("#"):
            continue
        # IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME; the line after it holds the image's 2-D points.
        parts = line.split(maxsplit=9)
        if len(parts) < 10:
            raise ValueError(f"line {i}: expected IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME, found {line[:80]!r}")
        try:
            numbers = [float(x) for x in parts[1:8]]
            image_id, camera_id = int(parts[0]), int(parts[8])
        except ValueError:
            raise ValueError(f"line {i}: expected numbers before the name, found {line[:80]!r}") from None
        entries.append(ImageEntry(image_id, tuple(numbers[:4]), tuple(numbers[4:]), camera_id, parts[9],
                                  f"{path.name} line {i}"))
        i += 1  # POINTS2D line
    return entries


def _read_binary_images(path: Path) -> list[ImageEntry]:
    entries = []
    with open(path, "rb") as f:
        (count,) = struct.unpack("<Q", f.read(8))
        for _ in range(count):
            offset = f.tell()
            image_id, *numbers, camera_id = struct.unpack("<I7dI", f.read(64))
            name = bytearray()
            while (c := f.read(1)) not in (b"\0", b""):
                name += c
            (n_points,) = struct.unpack("<Q", f.read(8))
            f.seek(24 * n_points, 1)
            entries.append(ImageEntry(image_id, tuple(numbers[:4]), tuple(numbers[4:]), camera_id,
                                      name.decode("utf-8"), f"{path.name} byte {offset}"))
    return entries


def pose_problem(q_wxyz, t) -> str | None:
    """Why a stored pose cannot be a camera (non-finite numbers, zero or non-unit quaternion), or None."""
    if not all(math.isfinite(x) for x in (*q_wxyz, *t)):
        return f"non-finite pose (q {_nums(q_wxyz)}, t {_nums(t)})"
    norm = math.sqrt(sum(x * x for x in q_wxyz))
    if norm < 1e-12:
        return "zero quaternion (qw qx qy qz = 0 0 0 0)"
    if abs(norm - 1) > QUATERNION_NORM_TOLERANCE:
        return f"non-unit quaternion (norm {norm:.6g}, q {_nums(q_wxyz)})"
    return None


def camera_problem(params, width: int, height: int) -> str | None:
    """Why stored intrinsics cannot be a camera (non-finite, focal length or size not positive), or None."""
    if not all(math.isfinite(float(p)) for p in params):
        return f"non-finite parameters {_nums(params)}"
    if width <= 0 or height <= 0:
        return f"size {width}x{height} is not positive"
    if params and float(params[0]) <= 0:
        return f"focal length {float(params[0]):g} is not positive"
    return None


def _nums(xs) -> str:
    return " ".join(f"{float(x):g}" for x in xs)


def check_entries(entries: list[ImageEntry], sparse: Path, flag: str) -> dict[int, str]:
    """{image_id: whole name}; refuses bad poses and two images with one name, naming the file and line."""
    seen: dict[str, ImageEntry] = {}
    for e in entries:
        problem = pose_problem(e.q_wxyz, e.t)
        if problem:
            raise UserError(f"{flag} {sparse}: {e.where}: image {e.image_id} ({e.name!r}) has a {problem}")
        if e.name in seen:
            raise UserError(f"{flag} {sparse}: {e.where}: image name {e.name!r} is also used by "
                            f"{seen[e.name].where}; two images cannot share a name")
        seen[e.name] = e
    return {e.image_id: e.name for e in entries}


def read_camera_records(sparse: str | Path, flag: str = "--src") -> dict[str, dict]:
    """{image name: camera record} of the registered (posed) images, sorted by name; `flag` names the culprit in
    errors. Every camera of the model must be convertible to the vector, else one line naming it."""
    import pycolmap

    sparse = Path(sparse)
    fmt = model_format(sparse, flag)
    names = check_entries(read_image_entries(sparse, fmt, flag), sparse, flag)
    try:
        rec = pycolmap.Reconstruction(str(sparse))
    except Exception as exc:  # pycolmap raises plain RuntimeError for unreadable files
        raise UserError(f"{flag} {sparse}: pycolmap could not read the model ({str(exc).splitlines()[0]})") from None
    for cam_id, cam in sorted(rec.cameras.items()):
        reason = unsupported_reason(cam.model.name)
        if reason:
            raise UserError(f"{flag} {sparse}: camera {cam_id} uses {cam.model.name}: {reason}")
        problem = camera_problem(list(cam.params), cam.width, cam.height)
        if problem:
            raise UserError(f"{flag} {sparse}: cameras.{fmt}: camera {cam_id} ({cam.model.name}) has {problem}")
    posed = sorted((im for im in rec.images.values() if im.has_pose),
                   key=lambda im: names.get(im.image_id, im.name))
    scale = scene_scale([im.projection_center() for im in posed])
    records = {}
    for im in posed:
        cam, pose = rec.cameras[im.camera_id], im.cam_from_world()
        x, y, z, w = pose.rotation.quat  # pycolmap stores x, y, z, w; the files and contract 1 use w, x, y, z
        name = names.get(im.image_id, im.name)
        problem = pose_problem([w, x, y, z], list(pose.translation))
        if problem:  # a rig's frame pose composed into this image (frames file)
            raise UserError(f"{flag} {sparse}: image {im.image_id} ({name!r}) has a {problem}")
        records[name] = camera_record(cam.model.name, list(cam.params), cam.width, cam.height, [w, x, y, z],
                                      list(pose.translation), scale)
    return records
