"""Which cameras `omnideft generate` renders: `--camera` numbers, `--camera-from SPARSE --view NAME`, or
`--camera-from SPARSE --orbit A B --frames N` (slerp of the rotation, lerp of the rest; without --camera-from, A and B
are camera strings)."""

from __future__ import annotations

from omnideft.camera.colmap import read_camera_records
from omnideft.camera.parse import parse_camera
from omnideft.camera.record import interpolate_vectors, record_vector
from omnideft.errors import UserError

MIN_ORBIT_FRAMES = 2


def requested_cameras(camera: str | None, camera_from: str | None, view: str | None, orbit: list[str] | None,
                      frames: int) -> list[list[float]]:
    """[] (no camera), [one vector], or the orbit's `frames` vectors. Checked before any model loads."""
    if camera is not None and camera_from is not None:
        raise UserError("--camera and --camera-from exclude each other: give the numbers or a COLMAP model")
    if camera is not None:
        if view or orbit:
            raise UserError("--view and --orbit name views of --camera-from SPARSE_DIR, not of --camera")
        return [parse_camera(camera)]
    if camera_from is None:
        if view:
            raise UserError("--view needs --camera-from SPARSE_DIR (the COLMAP model)")
        if orbit:  # two camera strings: the orbit between two typed cameras (the studio's orbits)
            if not all("," in end for end in orbit):
                raise UserError(f"--orbit {' '.join(orbit)}: view names need --camera-from SPARSE_DIR; without it "
                                "give two camera strings of 11 numbers")
            return _orbit(parse_camera(orbit[0], "--orbit"), parse_camera(orbit[1], "--orbit"), frames)
        return []
    if bool(view) == bool(orbit):
        raise UserError("--camera-from needs exactly one of --view IMAGE_NAME or --orbit VIEW_A VIEW_B")
    records = read_camera_records(camera_from, "--camera-from")
    names = [view] if view else list(orbit)
    for name in names:
        if name not in records:
            close = sorted(records)[:5]
            raise UserError(f"view {name!r} is not a registered image of {camera_from} "
                            f"({len(records)} views, e.g. {', '.join(close) or 'none'})")
    if view:
        return [record_vector(records[view])]
    return _orbit(record_vector(records[orbit[0]]), record_vector(records[orbit[1]]), frames)


def _orbit(a: list[float], b: list[float], frames: int) -> list[list[float]]:
    if frames < MIN_ORBIT_FRAMES:
        raise UserError(f"--frames {frames} must be at least {MIN_ORBIT_FRAMES} for an orbit")
    return interpolate_vectors(a, b, frames)
