"""`build-dreambooth`: a DreamBooth subject folder -> personalisation shards.

`--src` is either one subject folder of images, or the DreamBooth dataset root (`dataset/<subject>/*.jpg` plus
`prompts_and_classes.txt`) with `--subject NAME`. Per subject image:
  * `dreambooth/subject`: "a photo of {token} {class}" -> the image (text-to-image, as the DEFT authors built it);
  * `dreambooth/subject_reference` (when --reference-views k > 0): k other images of the subject -> the image;
  * `dreambooth/class_prior`: "a photo of a {class}" -> each image of --class-images (prior preservation).
The benchmark's evaluation prompts (object or live-subject list) are filled in and stored in the manifest's
`extra.eval_prompts`.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from omnideft.data.format.writer import BuiltSample, InputImage, image_tags
from omnideft.errors import UserError

from .cli_common import SampleMaker, SourceBuilder, add_common_args, fingerprint_tree, key_for, require_dir, run_main
from .images import fit_longest_side, load_image

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}
PROMPTS_FILE = "prompts_and_classes.txt"
LIVE_CLASSES = {"cat", "dog"}  # the DreamBooth benchmark's live subjects use the live-subject prompt list
FORMAT_PROMPT_RE = re.compile(r"""['"](.+?)['"]\s*\.format\(""")


@dataclass(frozen=True)
class DreamBoothJob:
    kind: str            # subject | subject_reference | class_prior
    image: str           # path of the output image
    references: tuple[str, ...] = ()


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def parse_prompt_file(text: str) -> tuple[dict[str, str], dict[str, list[str]]]:
    """DreamBooth's prompts_and_classes.txt -> ({subject: class}, {"object": [...], "live": [...]}).

    Also accepts a plain list, one template per line, with {0}/{1} or {token}/{class} for token and class word.
    """
    classes: dict[str, str] = {}
    lists: dict[str, list[str]] = {"object": [], "live": []}
    current, in_classes = "object", False
    for line in (raw.strip() for raw in text.splitlines()):
        low = line.lower()
        if low in ("classes", "prompts") or low.endswith("prompts"):
            in_classes = low == "classes"
            current = "live" if low.startswith("live") else "object" if low.startswith("object") else current
        elif in_classes:
            if "," in line and low != "subject_name,class":
                subject, cls = (x.strip() for x in line.split(",", 1))
                classes[subject] = cls
        elif FORMAT_PROMPT_RE.search(line):
            lists[current].append(FORMAT_PROMPT_RE.search(line).group(1))
        elif "{" in line and "=" not in line:
            lists[current].append(line)
    return classes, lists


def source_id(path: str, kind: str = "subject") -> str:
    """'subject:dog6/00.jpg', 'class:class_dog/00.jpg': subject and class images with one file name stay apart."""
    p = Path(path)
    return f"{'class' if kind == 'class_prior' else 'subject'}:{p.parent.name}/{p.name}"


def fill_prompt(template: str, token: str, cls: str) -> str:
    return template.replace("{0}", token).replace("{1}", cls).replace("{token}", token).replace("{class}", cls)


class DreamBoothBuilder(SourceBuilder):
    name = "dreambooth"

    def __init__(self, args: argparse.Namespace):
        super().__init__(args)
        root = require_dir(args.src, "a DreamBooth subject folder or dataset root")
        self.subject_dir = root / args.subject if args.subject else root
        if not self.subject_dir.is_dir():
            raise UserError(f"--subject {args.subject}: expected folder {self.subject_dir}, found subjects "
                            f"{sorted(p.name for p in root.iterdir() if p.is_dir())[:10]}")
        # DreamBooth's layout: dataset/prompts_and_classes.txt next to dataset/<subject>/, so a subject folder
        # given as --src finds it one level up.
        self.prompt_file = self.find_prompt_file(root)
        classes, self.prompt_lists = ({}, {}) if self.prompt_file is None else \
            parse_prompt_file(self.prompt_file.read_text(encoding="utf-8"))
        subject_name = args.subject or root.name
        self.class_name = args.class_name or classes.get(subject_name)
        if not self.class_name:
            if self.prompt_file:
                raise UserError(f"--class-name is needed: subject {subject_name!r} is not listed in {self.prompt_file}")
            looked = " and ".join(str(f / PROMPTS_FILE) for f in dict.fromkeys((root, self.subject_dir.parent)))
            raise UserError(f"--class-name is needed for subject {subject_name!r}: looked for its class in {looked}, "
                            "found no such file")
        self.class_dir = require_dir(args.class_images, "a folder of class images") if args.class_images else None

    def find_prompt_file(self, root: Path) -> Path | None:
        if self.args.prompts:
            path = Path(self.args.prompts)
            if not path.is_file():
                raise UserError(f"--prompts {path}: no such file")
            return path
        for folder in (root, self.subject_dir.parent):
            if (folder / PROMPTS_FILE).is_file():
                return folder / PROMPTS_FILE
        return None

    def fingerprint(self) -> str:
        return fingerprint_tree(*[p for p in (self.subject_dir, self.class_dir) if p])

    def plan(self) -> list[DreamBoothJob]:
        images = list_images(self.subject_dir)
        if not images:
            found = sorted(p.name for p in self.subject_dir.iterdir())[:8]
            raise UserError(f"--src {self.subject_dir}: expected subject images (*.jpg, *.png, *.webp), found "
                            f"{found or 'an empty folder'}")
        names = [str(p) for p in images]
        jobs = [DreamBoothJob("subject", n) for n in names]
        k = min(self.args.reference_views, len(names) - 1)
        for i, name in enumerate(names):
            if k > 0:
                rng = np.random.default_rng([self.args.seed, i])
                others = [n for n in names if n != name]
                refs = tuple(others[j] for j in sorted(rng.choice(len(others), size=k, replace=False)))
                jobs.append(DreamBoothJob("subject_reference", name, refs))
        if self.class_dir:
            jobs += [DreamBoothJob("class_prior", str(p)) for p in list_images(self.class_dir)]
        return jobs

    def job_id(self, job: DreamBoothJob) -> str:
        return f"{job.kind}:{Path(job.image).parent.name}/{Path(job.image).name}"

    def job_task(self, job: DreamBoothJob) -> str:
        return f"dreambooth/{job.kind}"

    def open(self) -> "DreamBoothMaker":
        return DreamBoothMaker(self.args, self.class_name)

    def extra(self) -> dict:
        which = self.args.prompt_set
        if which == "auto":
            which = "live" if self.class_name in LIVE_CLASSES else "object"
        prompts = [fill_prompt(t, self.args.token, self.class_name) for t in self.prompt_lists.get(which, [])]
        if not prompts:
            where = f"in {self.prompt_file}" if self.prompt_file else f"(no {PROMPTS_FILE} found)"
            print(f"warning: no {which} evaluation prompts {where}; the manifest's extra.eval_prompts is empty "
                  "(give --prompts FILE)", file=sys.stderr)
        return {"token": self.args.token, "class_name": self.class_name, "prompt_set": which, "eval_prompts": prompts}


class DreamBoothMaker(SampleMaker):
    def __init__(self, args: argparse.Namespace, class_name: str):
        self.args, self.class_name = args, class_name

    def load(self, path: str):
        return fit_longest_side(load_image(path, max_pixels=self.args.max_pixels), self.args.resolution)

    def make(self, index: int, job: DreamBoothJob) -> BuiltSample:
        subject = f"{self.args.token} {self.class_name}"
        inputs = [InputImage(self.load(p), "subject_reference", "jpg") for p in job.references]
        if job.kind == "class_prior":
            text = f"a photo of a {self.class_name}"
        elif inputs:
            text = f"{image_tags(len(inputs))} show {subject}. a photo of {subject}"
        else:
            text = f"a photo of {subject}"
        return BuiltSample(
            key=key_for(DreamBoothBuilder.name, index), task=f"dreambooth/{job.kind}", instruction=text,
            inputs=inputs, output=self.load(job.image), output_ext="jpg", caption=text if not inputs else None,
            source={"dataset": "dreambooth",
                    "ids": [source_id(p) for p in job.references] + [source_id(job.image, job.kind)]})


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="build-dreambooth", description=__doc__.splitlines()[0])
    p.add_argument("--src", required=True, help="subject folder, or the DreamBooth dataset root with --subject")
    p.add_argument("--subject", default=None, help="subject folder name inside --src (e.g. dog6)")
    p.add_argument("--token", default="sks", help="identifier token (default sks)")
    p.add_argument("--class-name", default=None, help="class word, e.g. dog (default: from prompts_and_classes.txt)")
    p.add_argument("--prompts", default=None, help=f"prompt list ({PROMPTS_FILE} format or one template per line)")
    p.add_argument("--prompt-set", choices=("auto", "object", "live"), default="auto",
                   help="which DreamBooth prompt list to store (auto: live for cat/dog)")
    p.add_argument("--class-images", default=None, help="folder of class images for prior preservation")
    p.add_argument("--reference-views", type=int, default=2,
                   help="k other subject images as inputs for subject_reference samples (0: none)")
    add_common_args(p, resolution=512)
    return p


def main(argv: list[str] | None = None) -> int:
    return run_main(make_parser, DreamBoothBuilder, argv)


if __name__ == "__main__":
    sys.exit(main())
