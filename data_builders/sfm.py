"""`build-sfm`: a COLMAP sparse model + its images -> novel-view samples with camera records.

Each registered image is once the target: its k nearest registered views (by camera centre) are the inputs, the
target's camera record (contract 1 + the 11-number vector, defined once in omnideft/camera/record.py) is the
sample's `camera`, and the inputs' records are in `input_cameras`. Text and binary models are read by pycolmap
(4.x). With `--context-views 0` a sample is the camera alone -> the view (camera-only novel view synthesis).

Cameras match their pixels: an image whose size is not its COLMAP camera's is refused (undistorted images next to
a distorted model, resized copies), or with --rescale-cameras its intrinsics are scaled to it when the aspect
ratios agree. Resizing to --resolution crops the few rounding pixels instead of stretching, and every record in the
shards describes the pixels stored (focal lengths scaled, principal point moved by the crop); `resized_from` keeps
the model's own numbers. Implausible intrinsics are warned about and listed in the manifest's extra.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from omnideft.camera.colmap import read_camera_records
from omnideft.camera.record import camera_centre, implausible_intrinsics, transformed_record
from omnideft.data.format.writer import BuiltSample, InputImage, image_tags
from omnideft.errors import UserError

from .cli_common import SampleMaker, SourceBuilder, add_common_args, fingerprint_tree, key_for, require_dir, run_main
from .images import SkipSample, fit_box, load_image

SPARE_CONTEXT = 4  # next-nearest views tried when a context image is unreadable
ASPECT_TOLERANCE = 0.01  # --rescale-cameras: image and camera aspect ratios may differ by this fraction


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


def camera_warnings(views: list[SfmView]) -> list[str]:
    """One line per distinct camera with implausible intrinsics, naming its first image."""
    seen, lines = set(), []
    for v in views:
        cam = v.camera
        identity = (cam["model"], tuple(cam["params"]), cam["width"], cam["height"])
        if identity in seen:
            continue
        seen.add(identity)
        lines += [f"camera of {v.name} ({cam['model']} {cam['width']}x{cam['height']}): {p}"
                  for p in implausible_intrinsics(cam)]
    return lines


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
        views = [self.matched(v) for v in views]
        self.camera_warnings = camera_warnings(views)
        for line in self.camera_warnings:
            print(f"warning: {line}", file=sys.stderr)
        return nearest_contexts(views, self.args.context_views)

    def matched(self, view: SfmView) -> SfmView:
        """The view with a camera of its image's size: as it is when they agree, refused when they do not, or with
        --rescale-cameras scaled to the image (same aspect ratio only). Missing or unreadable images are left to
        the sample makers, which skip them."""
        cam = view.camera
        try:
            with Image.open(self.images / view.name) as img:
                width, height = img.size
        except (OSError, Image.DecompressionBombError):  # the sample makers' loader skips it, counted
            return view
        if (width, height) == (cam["width"], cam["height"]):
            return view
        seen = f"--images {self.images}: {view.name} is {width}x{height} but its camera in {self.sparse} is " \
               f"{cam['width']}x{cam['height']} ({cam['model']})"
        if not self.args.rescale_cameras:
            raise UserError(f"{seen}: the images do not match the model (undistorted images next to a distorted "
                            "model, or resized copies?); use the images the model was made from, or pass "
                            "--rescale-cameras to scale the intrinsics to the image size")
        sx, sy = width / cam["width"], height / cam["height"]
        if abs(sx / sy - 1) > ASPECT_TOLERANCE:
            raise UserError(f"{seen}: the aspect ratios differ, so --rescale-cameras cannot match them; use the "
                            "images the model was made from")
        return SfmView(view.name, transformed_record(cam, sx, sy, 0.0, 0.0, width, height))

    def extra(self) -> dict:
        return {"camera_warnings": list(getattr(self, "camera_warnings", []))}

    def job_id(self, job: SfmJob) -> str:
        return job.target.name

    def job_task(self, job: SfmJob) -> str:
        return "sfm/novel_view"

    def open(self) -> "SfmMaker":
        return SfmMaker(self.images, self.args)


class SfmMaker(SampleMaker):
    def __init__(self, images: Path, args: argparse.Namespace):
        self.images, self.args = images, args

    def view(self, view: SfmView) -> tuple[Image.Image, dict]:
        """The image at --resolution (cropped, never stretched) and the camera record of those pixels."""
        cam = view.camera
        img = load_image(self.images / view.name, max_pixels=self.args.max_pixels)
        if img.size != (cam["width"], cam["height"]):  # changed since planning
            raise SkipSample("bad_metadata", f"{self.images / view.name} is {img.width}x{img.height}, its camera "
                                             f"{cam['width']}x{cam['height']}")
        (width, height), box, s = fit_box(img.width, img.height, self.args.resolution)
        if (width, height) == img.size:
            return img, cam
        record = transformed_record(cam, s, s, box[0], box[1], width, height)
        record["resized_from"] = {"width": cam["width"], "height": cam["height"], "params": cam["params"],
                                  "box": [round(x, 6) for x in box]}
        return img.resize((width, height), Image.BICUBIC, box=box), record

    def contexts(self, job: SfmJob) -> list[tuple[Image.Image, dict, str]]:
        """The k nearest readable views; an unreadable context view is replaced by the next nearest."""
        chosen = []
        for v in job.context:
            if len(chosen) == self.args.context_views:
                break
            try:
                chosen.append((*self.view(v), v.name))
            except SkipSample:
                continue
        if not chosen and self.args.context_views > 0:
            raise SkipSample("no_context", f"no readable context view for {job.target.name}")
        return chosen

    def make(self, index: int, job: SfmJob) -> BuiltSample:
        target, camera = self.view(job.target)
        context = self.contexts(job)
        inputs = [InputImage(img, "context_view", "jpg") for img, _, _ in context]
        views = f"Views: {image_tags(len(inputs))} " if inputs else ""
        instruction = f"{self.args.scene_prompt} {views}Generate the view seen by the target camera."
        return BuiltSample(
            key=key_for(SfmBuilder.name, index), task="sfm/novel_view", instruction=instruction.strip(),
            inputs=inputs, output=target, output_ext="jpg", camera=camera,
            source={"dataset": "colmap", "ids": [name for _, _, name in context] + [job.target.name]},
            extra={"input_cameras": [cam for _, cam, _ in context]})


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="build-sfm", description=__doc__.splitlines()[0])
    p.add_argument("--src", required=True, help="COLMAP sparse model dir (e.g. sparse/0), text or binary")
    p.add_argument("--images", required=True, help="image folder the model's image names are relative to")
    p.add_argument("--context-views", type=int, default=3,
                   help="k input views per sample (default 3; 0 = the camera alone)")
    p.add_argument("--rescale-cameras", action="store_true",
                   help="scale the intrinsics of cameras whose images have another size (same aspect ratio only); "
                        "default: refuse such images")
    p.add_argument("--scene-prompt", default="A scene.", help="text put before the views, e.g. 'a photo of sks rock'")
    add_common_args(p, resolution=512)
    return p


def main(argv: list[str] | None = None) -> int:
    return run_main(make_parser, SfmBuilder, argv)


if __name__ == "__main__":
    sys.exit(main())
