"""`build-insdet`: the InsDet instance-detection dataset -> subject and scene personalisation shards.

Layout read (InsDet-FULL and InsDet-mini):
  Objects/NNN_name/images/*.jpg   views of one object (masks/*.png: GrabCut masks with the same basenames)
  Scenes/{easy,hard}/<scene>/*.jpg + PascalVOC *.xml with the boxes of the objects in each scene image
  Background/*.jpg                images with none of the objects
Samples:
  insdet/object      k views of an object -> another view (--foreground-mask puts masked views on white)
  insdet/scene       crops of the boxed objects of a scene image -> the scene image (boxes kept in `source`)
  insdet/background  caption -> background image (text-to-image)
"""

from __future__ import annotations

import argparse
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from omnideft.data.format.writer import BuiltSample, InputImage, image_tags
from omnideft.errors import UserError

from .captioners import Caption, add_captioner_args, check_captioner_args, make_captioner
from .cli_common import SampleMaker, SourceBuilder, add_common_args, fingerprint_tree, key_for, require_dir, run_main
from .images import SkipSample, apply_mask, cap_longest_side, decode_image, read_bytes

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}
MASK_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
PARTS = ("objects", "scenes", "background")
PART_FOLDERS = {"objects": "Objects", "scenes": "Scenes", "background": "Background"}
LAYOUT = "Objects/NNN_name/images/*.jpg, Scenes/{easy,hard}/<scene>/*.jpg + .xml, Background/*.jpg"


@dataclass(frozen=True)
class ObjectJob:
    name: str                 # e.g. 039_vinda_tissue
    target: str
    views: tuple[str, ...]


@dataclass(frozen=True)
class SceneJob:
    scene: str                # e.g. easy/leisure_zone
    image: str
    xml: str


@dataclass(frozen=True)
class BackgroundJob:
    image: str


def readable(name: str) -> str:
    """'039_vinda_tissue' -> 'vinda tissue'."""
    parts = name.split("_")
    return " ".join(parts[1:] if parts[0].isdigit() else parts)


def images_in(folder: Path) -> list[Path]:
    """Images of a folder, without masks kept next to them (`<stem>_mask.*`)."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.stem.endswith("_mask"))


def mask_candidates(view: Path) -> list[Path]:
    """Where the mask of an object view may be, in order: masks/<stem>.png (InsDet), masks/<stem>_mask.*, and
    <stem>_mask.* next to the view (both common in re-packaged copies)."""
    masks, stem = view.parent.parent / "masks", view.stem
    named = [f"{stem}_mask{ext}" for ext in MASK_SUFFIXES]
    return [masks / f"{stem}.png"] + [masks / n for n in named] + [view.parent / n for n in named]


def parse_voc(xml_text: bytes) -> tuple[tuple[int, int], list[dict]]:
    """PascalVOC (labelImg): image size and boxes [{name, category_id, xmin, ymin, xmax, ymax}] in pixels."""
    root = ET.fromstring(xml_text)
    size = root.find("size")
    width, height = int(size.findtext("width")), int(size.findtext("height"))
    boxes = []
    for obj in root.iter("object"):
        name, box = obj.findtext("name").strip(), obj.find("bndbox")
        coords = {k: int(float(box.findtext(k))) for k in ("xmin", "ymin", "xmax", "ymax")}
        prefix = name.split("_", 1)[0]
        boxes.append({"name": name, "category_id": int(prefix) if prefix.isdigit() else None, **coords})
    return (width, height), boxes


class InsDetBuilder(SourceBuilder):
    name = "insdet"

    def __init__(self, args: argparse.Namespace):
        super().__init__(args)
        check_captioner_args(args)
        self.root = require_dir(args.src, f"the InsDet layout ({LAYOUT})")
        if not (self.root / "Objects").is_dir():
            found = sorted(p.name for p in self.root.iterdir())[:8]
            raise UserError(f"--src {self.root}: expected the InsDet layout ({LAYOUT}), found {found or 'nothing'}")

    def fingerprint(self) -> str:
        return fingerprint_tree(self.root)

    def plan(self) -> list:
        parts = {p.strip() for p in self.args.parts.split(",") if p.strip()}
        unknown = sorted(parts - set(PARTS))
        if unknown or not parts:
            raise UserError(f"--parts {self.args.parts}: unknown part(s) {unknown}; choose from {','.join(PARTS)}")
        for part in sorted(parts):
            folder = self.root / PART_FOLDERS[part]
            if not folder.is_dir():
                found = sorted(p.name for p in self.root.iterdir())[:8]
                raise UserError(f"--parts {part}: expected the folder {folder}, found {found} in --src "
                                f"(leave {part} out of --parts to build without it)")
        jobs: list = []
        if "objects" in parts:
            jobs += self.object_jobs()
        if "scenes" in parts:
            jobs += self.scene_jobs()
        if "background" in parts:
            jobs += [BackgroundJob(str(p)) for p in images_in(self.root / "Background")]
        return jobs

    def object_jobs(self) -> list[ObjectJob]:
        jobs = []
        objects = sorted(p for p in (self.root / "Objects").iterdir() if p.is_dir())
        for obj_index, obj in enumerate(objects):
            views = [str(p) for p in images_in(obj / "images")]
            k = min(self.args.views, len(views) - 1)
            for i, target in enumerate(views):
                if k < 1:
                    break
                rng = np.random.default_rng([self.args.seed, obj_index, i])
                others = [v for v in views if v != target]
                picks = tuple(others[j] for j in sorted(rng.choice(len(others), size=k, replace=False)))
                jobs.append(ObjectJob(obj.name, target, picks))
        if not jobs:
            raise UserError(f"--src {self.root}: expected Objects/NNN_name/images/ with at least 2 views, found none")
        return jobs

    def scene_jobs(self) -> list[SceneJob]:
        jobs = []
        for level in ("easy", "hard"):
            for scene in sorted(p for p in (self.root / "Scenes" / level).glob("*") if p.is_dir()):
                for img in images_in(scene):
                    jobs.append(SceneJob(f"{level}/{scene.name}", str(img), str(img.with_suffix(".xml"))))
        return jobs

    def job_id(self, job) -> str:
        path = Path(job.target if isinstance(job, ObjectJob) else job.image)
        return f"{path.parent.parent.name}/{path.name}" if isinstance(job, ObjectJob) else \
            f"{path.parent.name}/{path.name}"

    def job_task(self, job) -> str:
        return {ObjectJob: "insdet/object", SceneJob: "insdet/scene", BackgroundJob: "insdet/background"}[type(job)]

    def open(self) -> "InsDetMaker":
        return InsDetMaker(self.args)


class InsDetMaker(SampleMaker):
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.captioner = make_captioner(args)

    def load(self, path: str) -> tuple[Image.Image, bytes]:
        """Image and its encoded bytes (the caption cache key); big JPEGs decode at a reduced scale."""
        data = read_bytes(path)
        return decode_image(data, path, max_pixels=self.args.max_pixels, draft=self.args.resolution), data

    def view(self, path: str) -> tuple[Image.Image, bytes]:
        img, data = self.load(path)
        if self.args.foreground_mask:
            candidates = mask_candidates(Path(path))
            found = next((c for c in candidates if c.is_file()), None)
            if found is None:
                raise SkipSample("missing", f"no mask for {path} (looked for masks/{Path(path).stem}.png, "
                                            f"masks/{Path(path).stem}_mask.*, {Path(path).stem}_mask.* beside it)")
            mask, _ = self.load(str(found))
            img = apply_mask(img, mask, fill=255)
        return cap_longest_side(img, self.args.resolution), data

    def caption(self, img: Image.Image, data: bytes, fallback: str) -> Caption:
        return self.captioner.caption(img, data, fallback)

    def make(self, index: int, job) -> BuiltSample:
        key = key_for(InsDetBuilder.name, index)
        if isinstance(job, ObjectJob):
            return self.object_sample(key, job)
        if isinstance(job, SceneJob):
            return self.scene_sample(key, job)
        return self.background_sample(key, job)

    def object_sample(self, key: str, job: ObjectJob) -> BuiltSample:
        target, target_bytes = self.view(job.target)
        inputs = [InputImage(self.view(v)[0], "object_view", "jpg") for v in job.views]
        caption = self.caption(target, target_bytes, f"a photo of {readable(job.name)}")
        text = f"{image_tags(len(inputs))} show one object ({readable(job.name)}). Another view of it: {caption.text}"
        return BuiltSample(key, "insdet/object", text, inputs, target, "jpg", caption=caption.text,
                           caption_source=caption.source,
                           source={"dataset": "InsDet", "object": job.name,
                                   "ids": [Path(p).name for p in job.views + (job.target,)]})

    def scene_sample(self, key: str, job: SceneJob) -> BuiltSample:
        try:
            (width, height), boxes = parse_voc(read_bytes(job.xml))
        except (ET.ParseError, AttributeError, TypeError, ValueError) as exc:
            raise SkipSample("bad_metadata", f"{job.xml}: {exc}") from None
        scene_img, data = self.load(job.image)
        sx, sy = scene_img.width / width, scene_img.height / height  # draft decoding shrinks by a power of two
        boxes = sorted(boxes, key=lambda b: -(b["xmax"] - b["xmin"]) * (b["ymax"] - b["ymin"]))
        crops = []
        for b in boxes[: self.args.max_scene_objects]:
            crop = scene_img.crop((int(b["xmin"] * sx), int(b["ymin"] * sy), int(b["xmax"] * sx),
                                   int(b["ymax"] * sy)))
            if crop.width > 0 and crop.height > 0:
                crops.append((b, cap_longest_side(crop, self.args.crop_resolution)))
        output = cap_longest_side(scene_img, self.args.resolution)
        scene = readable(job.scene.split("/")[-1])
        caption = self.caption(output, data, f"a photo of the {scene} scene")
        names = ", ".join(f"{readable(b['name'])} {image_tags(1, k + 1)}" for k, (b, _) in enumerate(crops))
        text = f"The {scene} scene with {names}. {caption.text}" if crops else caption.text
        return BuiltSample(key, "insdet/scene", text, [InputImage(c, "scene_object", "jpg") for _, c in crops],
                           output, "jpg", caption=caption.text, caption_source=caption.source,
                           source={"dataset": "InsDet", "scene": job.scene, "ids": [Path(job.image).name],
                                   "boxes": [{"name": b["name"], "category_id": b["category_id"],
                                              "xyxy_norm": [round(b["xmin"] / width, 6), round(b["ymin"] / height, 6),
                                                            round(b["xmax"] / width, 6),
                                                            round(b["ymax"] / height, 6)]} for b in boxes]})

    def background_sample(self, key: str, job: BackgroundJob) -> BuiltSample:
        img, data = self.load(job.image)
        output = cap_longest_side(img, self.args.resolution)
        caption = self.caption(output, data, "a photo of an indoor scene")
        return BuiltSample(key, "insdet/background", caption.text, [], output, "jpg", caption=caption.text,
                           caption_source=caption.source,
                           source={"dataset": "InsDet", "ids": [Path(job.image).name]})


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="build-insdet", description=__doc__.splitlines()[0])
    p.add_argument("--src", required=True, help="InsDet root (holding Objects/, Scenes/, Background/)")
    p.add_argument("--parts", default="objects,scenes,background", help="which parts to build (comma list)")
    p.add_argument("--views", type=int, default=3, help="k input views per object sample (default 3)")
    p.add_argument("--foreground-mask", action="store_true", help="mask object views with masks/*.png (white bg)")
    p.add_argument("--max-scene-objects", type=int, default=6, help="at most this many object crops per scene")
    p.add_argument("--crop-resolution", type=int, default=256, help="longest side of object crops (default 256)")
    add_captioner_args(p)
    add_common_args(p, resolution=512)
    return p


def main(argv: list[str] | None = None) -> int:
    return run_main(make_parser, InsDetBuilder, argv)


if __name__ == "__main__":
    sys.exit(main())
