"""Orbit outputs: an animated GIF (PIL), a frame strip PNG, the frames as PNGs, and an MP4 when a video writer
(imageio with imageio-ffmpeg) is installed. Every file is written under a temporary name, then renamed."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
from PIL import Image

from omnideft.files import atomic_path
from omnideft.images import save_image_atomic

STRIP_CELL = 128  # frames in the strip are at most this many pixels high


def write_gif(frames: list[Image.Image], path: Path, fps: float) -> Path:
    with atomic_path(path) as tmp:
        frames[0].save(tmp, format="GIF", save_all=True, append_images=frames[1:], duration=round(1000 / fps), loop=0)
    return path


def frame_strip(frames: list[Image.Image], cell: int = STRIP_CELL) -> Image.Image:
    """All frames side by side, scaled to at most `cell` pixels high."""
    scale = min(1.0, cell / frames[0].height)
    w, h = max(1, round(frames[0].width * scale)), max(1, round(frames[0].height * scale))
    strip = Image.new("RGB", (w * len(frames), h), "white")
    for i, f in enumerate(frames):
        strip.paste(f.convert("RGB").resize((w, h), Image.LANCZOS), (i * w, 0))
    return strip


def mp4_writer_available() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("imageio", "imageio_ffmpeg"))


def write_mp4(frames: list[Image.Image], path: Path, fps: float) -> Path:
    import imageio.v2 as imageio  # optional: only when mp4_writer_available()

    # libx264 wants even sides; macro_block_size=1 keeps the frame size as rendered
    with atomic_path(path) as tmp, imageio.get_writer(tmp, format="FFMPEG", fps=fps, codec="libx264",
                                                      macro_block_size=1) as writer:
        for f in frames:
            writer.append_data(np.asarray(f.convert("RGB")))
    return path


def write_orbit(frames: list[Image.Image], out: str | Path, fps: float) -> dict[str, Path]:
    """OUT.gif, OUT_strip.png, OUT_frames/frame_NNN.png and (when possible) OUT.mp4, from OUT's stem."""
    out = Path(out)
    stem = out.with_suffix("")
    paths = {"gif": write_gif(frames, stem.with_suffix(".gif"), fps),
             "strip": save_image_atomic(frame_strip(frames), stem.with_name(stem.name + "_strip.png"))}
    folder = stem.with_name(stem.name + "_frames")
    for i, f in enumerate(frames):
        save_image_atomic(f, folder / f"frame_{i:03d}.png")
    paths["frames"] = folder
    if mp4_writer_available():
        paths["mp4"] = write_mp4(frames, stem.with_suffix(".mp4"), fps)
    return paths
