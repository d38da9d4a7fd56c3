"""Read a COLMAP sparse model (text or binary) with pycolmap into camera records, one per registered image.

Shared by `build-sfm` (the records written into shards) and `omnideft generate --camera-from` (the vector of a
named view), so both compute the same scene scale and the same 11 numbers.
"""

from __future__ import annotations

from pathlib import Path

from omnideft.camera.record import camera_record, scene_scale, unsupported_reason
from omnideft.errors import UserError

MODEL_FILES = ("cameras", "images")


def model_format(sparse: Path, flag: str = "--src") -> str:
    if not sparse.is_dir():
        raise UserError(f"{flag} {sparse}: not a directory (expected a COLMAP sparse model such as sparse/0)")
    for ext in ("bin", "txt"):
        if all((sparse / f"{f}.{ext}").is_file() for f in MODEL_FILES):
            return ext
    found = sorted(p.name for p in sparse.iterdir())[:8]
    raise UserError(f"{flag} {sparse}: expected a COLMAP sparse model (cameras.bin + images.bin, or cameras.txt + "
                    f"images.txt), found {found or 'an empty directory'}")


def read_camera_records(sparse: str | Path, flag: str = "--src") -> dict[str, dict]:
    """{image name: camera record} of the registered (posed) images, sorted by name; `flag` names the culprit in
    errors. Every camera of the model must be convertible to the vector, else one line naming it."""
    import pycolmap

    sparse = Path(sparse)
    model_format(sparse, flag)
    try:
        rec = pycolmap.Reconstruction(str(sparse))
    except Exception as exc:  # pycolmap raises plain RuntimeError for unreadable files
        raise UserError(f"{flag} {sparse}: pycolmap could not read the model ({str(exc).splitlines()[0]})") from None
    for cam_id, cam in sorted(rec.cameras.items()):
        reason = unsupported_reason(cam.model.name)
        if reason:
            raise UserError(f"{flag} {sparse}: camera {cam_id} uses {cam.model.name}: {reason}")
    posed = sorted((im for im in rec.images.values() if im.has_pose), key=lambda im: im.name)
    scale = scene_scale([im.projection_center() for im in posed])
    records = {}
    for im in posed:
        cam, pose = rec.cameras[im.camera_id], im.cam_from_world()
        x, y, z, w = pose.rotation.quat  # pycolmap stores x, y, z, w; the files and contract 1 use w, x, y, z
        records[im.name] = camera_record(cam.model.name, list(cam.params), cam.width, cam.height, [w, x, y, z],
                                         list(pose.translation), scale)
    return records
