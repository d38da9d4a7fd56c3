"""`build-sfm`: a COLMAP sparse model + its images -> novel-view samples with camera records.

Each registered image is once the target: its k nearest registered views (by camera centre) are the inputs, the
target's camera record (contract 1 + the 11-number vector, see camera_record.py) is the sample's `camera`, and the
inputs' records are in `input_cameras`. Text and binary models are read by pycolmap (4.x).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from omnideft.errors import UserError

from .camera_record import camera_record, scene_scale, unsupported_reason
from .cli_common import SampleMaker, SourceBuilder, add_common_args, fingerprint_tree, key_for, require_dir, run_main
from .images import SkipSample, fit_longest_side, load_image
from .shard_writer import BuiltSample, InputImage, image_tags

MODEL_FILES = ("cameras", "images")
SPARE_CONTEXT = 4  # next-nearest views tried when a context image is unreadable


@dataclass(frozen=True)
class SfmView:
    name: str
    camera: dict


@dataclass(frozen=True)
class SfmJob:
    target: SfmView
    context: tuple[SfmView, ...]  # nearest first, k + SPARE_CONTEXT candidates


def model_format(sparse: Path) -> str:
    for ext in ("bin", "txt"):
        if all((sparse / f"{f}.{ext}").is_file() for f in MODEL_FILES):
            return ext
    found = sorted(p.name for p in sparse.iterdir())[:8]
    raise UserError(f"--src {sparse}: expected a COLMAP sparse model (cameras.bin + images.bin, or cameras.txt + "
                    f"images.txt), found {found or 'an empty directory'}")


def read_views(sparse: Path) -> list[SfmView]:
    import pycolmap

    model_format(sparse)
    try:
        rec = pycolmap.Reconstruction(str(sparse))
    except Exception as exc:  # pycolmap raises plain RuntimeError for unreadable files
        raise UserError(f"--src {sparse}: pycolmap could not read the model ({str(exc).splitlines()[0]})") from None
    for cam_id, cam in sorted(rec.cameras.items()):
        reason = unsupported_reason(cam.model.name)
        if reason:
            raise UserError(f"--src {sparse}: camera {cam_id} uses {cam.model.name}: {reason}")
    posed = sorted((im for im in rec.images.values() if im.has_pose), key=lambda im: im.name)
    centres = [im.projection_center() for im in posed]
    scale = scene_scale(centres)
    views = []
    for im in posed:
        cam, pose = rec.cameras[im.camera_id], im.cam_from_world()
        x, y, z, w = pose.rotation.quat  # pycolmap stores x, y, z, w; the files and contract 1 use w, x, y, z
        views.append(SfmView(im.name, camera_record(cam.model.name, list(cam.params), cam.width, cam.height,
                                                    [w, x, y, z], list(pose.translation), scale)))
    return views


def nearest_contexts(views: list[SfmView], k: int) -> list[SfmJob]:
    """Inputs = the k views whose camera centres are nearest the target's (ties broken by name order)."""
    centres = np.array([centre(v.camera) for v in views])
    jobs = []
    for i, view in enumerate(views):
        dist = np.linalg.norm(centres - centres[i], axis=1)
        order = [j for j in np.argsort(dist, kind="stable") if j != i][: k + SPARE_CONTEXT]
        jobs.append(SfmJob(view, tuple(views[j] for j in order)))
    return jobs


def centre(camera: dict) -> np.ndarray:
    """C = -R^T t for the world-to-camera pose."""
    w, x, y, z = camera["q_wxyz"]
    rot = np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                    [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                    [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])
    return -rot.T @ np.asarray(camera["t"])


class SfmBuilder(SourceBuilder):
    name = "sfm"

    def __init__(self, args: argparse.Namespace):
        super().__init__(args)
        self.sparse = require_dir(args.src, "a COLMAP sparse model directory")
        self.images = require_dir(args.images, "the image folder of the COLMAP project")

    def fingerprint(self) -> str:
        return fingerprint_tree(self.sparse, self.images)

    def plan(self) -> list[SfmJob]:
        views = read_views(self.sparse)
        if len(views) < 2:
            raise UserError(f"--src {self.sparse}: expected at least 2 registered images, found {len(views)}")
        return nearest_contexts(views, self.args.context_views)

    def job_id(self, job: SfmJob) -> str:
        return job.target.name

    def job_task(self, job: SfmJob) -> str:
        return "sfm/novel_view"

    def open(self) -> "SfmMaker":
        return SfmMaker(self.images, self.args)


class SfmMaker(SampleMaker):
    def __init__(self, images: Path, args: argparse.Namespace):
        self.images, self.args = images, args

    def view(self, name: str):
        img = load_image(self.images / name, max_pixels=self.args.max_pixels)
        return fit_longest_side(img, self.args.resolution)

    def contexts(self, job: SfmJob) -> list[tuple[SfmView, object]]:
        """The k nearest readable views; an unreadable context view is replaced by the next nearest."""
        chosen = []
        for v in job.context:
            if len(chosen) == self.args.context_views:
                break
            try:
                chosen.append((v, self.view(v.name)))
            except SkipSample:
                continue
        if not chosen:
            raise SkipSample("no_context", f"no readable context view for {job.target.name}")
        return chosen

    def make(self, index: int, job: SfmJob) -> BuiltSample:
        target = self.view(job.target.name)
        context = self.contexts(job)
        inputs = [InputImage(img, "context_view", "jpg") for _, img in context]
        instruction = (f"{self.args.scene_prompt} Views: {image_tags(len(inputs))} "
                       "Generate the view seen by the target camera.")
        return BuiltSample(
            key=key_for(SfmBuilder.name, index), task="sfm/novel_view", instruction=instruction.strip(),
            inputs=inputs, output=target, output_ext="jpg", camera=job.target.camera,
            source={"dataset": "colmap", "ids": [v.name for v, _ in context] +
                    [job.target.name]},
            extra={"input_cameras": [v.camera for v, _ in context]})


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="build-sfm", description=__doc__.splitlines()[0])
    p.add_argument("--src", required=True, help="COLMAP sparse model dir (e.g. sparse/0), text or binary")
    p.add_argument("--images", required=True, help="image folder the model's image names are relative to")
    p.add_argument("--context-views", type=int, default=3, help="k input views per sample (default 3)")
    p.add_argument("--scene-prompt", default="A scene.", help="text put before the views, e.g. 'a photo of sks rock'")
    add_common_args(p, resolution=512)
    return p


def main(argv: list[str] | None = None) -> int:
    return run_main(make_parser, SfmBuilder, argv)


if __name__ == "__main__":
    sys.exit(main())
