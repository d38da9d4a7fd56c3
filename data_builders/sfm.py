"""`build-sfm`: a COLMAP sparse model + its images -> novel-view samples with camera records.

Each registered image is once the target: its k nearest registered views (by camera centre) are the inputs, the
target's camera record (contract 1 + the 11-number vector, defined once in omnideft/camera/record.py) is the
sample's `camera`, and the inputs' records are in `input_cameras`. Text and binary models are read by pycolmap
(4.x). With `--context-views 0` a sample is the camera alone -> the view (camera-only novel view synthesis).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from omnideft.camera.colmap import read_camera_records
from omnideft.camera.record import camera_centre
from omnideft.data.format.writer import BuiltSample, InputImage, image_tags
from omnideft.errors import UserError

from .cli_common import SampleMaker, SourceBuilder, add_common_args, fingerprint_tree, key_for, require_dir, run_main
from .images import SkipSample, fit_longest_side, load_image

SPARE_CONTEXT = 4  # next-nearest views tried when a context image is unreadable


@dataclass(frozen=True)
class SfmView:
    name: str
    camera: dict


@dataclass(frozen=True)
class SfmJob:
    target: SfmView
    context: tuple[SfmView, ...]  # nearest first, k + SPARE_CONTEXT candidates


def read_views(sparse: Path) -> list[SfmView]:
    return [SfmView(name, record) for name, record in read_camera_records(sparse, "--src").items()]


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
    return camera_centre(camera["q_wxyz"], camera["t"])


class SfmBuilder(SourceBuilder):
    name = "sfm"

    def __init__(self, args: argparse.Namespace):
        super().__init__(args)
        self.sparse = require_dir(args.src, "a COLMAP sparse model directory")
        self.images = require_dir(args.images, "the image folder of the COLMAP project")

    def fingerprint(self) -> str:
        return fingerprint_tree(self.sparse, self.images)

    def plan(self) -> list[SfmJob]:
        if self.args.context_views < 0:
            raise UserError(f"--context-views {self.args.context_views} must be 0 or more")
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
        if not chosen and self.args.context_views > 0:
            raise SkipSample("no_context", f"no readable context view for {job.target.name}")
        return chosen

    def make(self, index: int, job: SfmJob) -> BuiltSample:
        target = self.view(job.target.name)
        context = self.contexts(job)
        inputs = [InputImage(img, "context_view", "jpg") for _, img in context]
        views = f"Views: {image_tags(len(inputs))} " if inputs else ""
        instruction = f"{self.args.scene_prompt} {views}Generate the view seen by the target camera."
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
    p.add_argument("--context-views", type=int, default=3,
                   help="k input views per sample (default 3; 0 = the camera alone)")
    p.add_argument("--scene-prompt", default="A scene.", help="text put before the views, e.g. 'a photo of sks rock'")
    add_common_args(p, resolution=512)
    return p


def main(argv: list[str] | None = None) -> int:
    return run_main(make_parser, SfmBuilder, argv)


if __name__ == "__main__":
    sys.exit(main())
