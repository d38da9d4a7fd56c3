"""`build-jsonl`: OmniGen's JSONL training format -> shards.

Each line: `instruction` (with `<img><|image_k|></img>` placeholders), `input_images` (list, may be empty or
missing), `output_image` (one path) — `output_images` (a path or a list, as OmniGen's fine-tuning doc spells it) is
accepted too; a list gives one sample per output. Relative paths are resolved against --images (default: the
`images/` folder beside the JSONL file when there is one, as in OmniGen's `toy_data/`, else the file's folder);
a path that leads outside --images (absolute, `..`, a symlink out) is skipped as `outside_images` unless
--allow-outside. `task_type` becomes the task `omnigen/<task_type>`.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from omnideft.data.format.schema import SampleError, check_placeholders
from omnideft.data.format.writer import BuiltSample, InputImage
from omnideft.errors import UserError

from .cli_common import SampleMaker, SourceBuilder, add_common_args, fingerprint_tree, key_for, run_main
from .images import SkipSample, cap_longest_side, load_image

KEEP_EXTS = {"jpg": "jpg", "jpeg": "jpg", "png": "png", "webp": "webp"}


@dataclass(frozen=True)
class JsonlJob:
    line: int            # 1-based line number in the file
    record: dict | None  # None when the line is not a JSON object
    output: str | None
    output_index: int


def task_name(task_type: object) -> str:
    name = re.sub(r"[^a-z0-9]+", "_", str(task_type or "").lower()).strip("_")
    return f"omnigen/{name or 'unspecified'}"


def outputs_of(record: dict) -> list[str]:
    out = record.get("output_image", record.get("output_images"))
    if isinstance(out, str):
        return [out]
    if isinstance(out, list) and all(isinstance(o, str) for o in out):
        return out
    return []


def default_images(jsonl: Path) -> Path:
    """OmniGen's toy_data/ keeps toy_data.jsonl beside images/ (its training script is given --image_path
    toy_data/images); elsewhere the paths are relative to the file's own folder."""
    return jsonl.parent / "images" if (jsonl.parent / "images").is_dir() else jsonl.parent


def parse_line(line_no: int, text: str) -> list[JsonlJob]:
    try:
        record = json.loads(text)
    except ValueError:
        return [JsonlJob(line_no, None, None, 0)]
    if not isinstance(record, dict):
        return [JsonlJob(line_no, None, None, 0)]
    outs = outputs_of(record) or [None]
    return [JsonlJob(line_no, record, out, i) for i, out in enumerate(outs)]


class JsonlBuilder(SourceBuilder):
    name = "jsonl"

    def __init__(self, args: argparse.Namespace):
        super().__init__(args)
        self.src = Path(args.src)
        if not self.src.is_file():
            raise UserError(f"--src {self.src}: expected a JSONL file, found "
                            f"{'a directory' if self.src.is_dir() else 'nothing'}")
        self.images = Path(args.images) if args.images else default_images(self.src)
        if not self.images.is_dir():
            raise UserError(f"--images {self.images}: expected the folder the image paths are relative to, found "
                            f"{'a file' if self.images.is_file() else 'nothing'}")

    def fingerprint(self) -> str:
        return fingerprint_tree(self.src, self.images)

    def plan(self) -> list[JsonlJob]:
        jobs, lines = [], self.src.read_text(encoding="utf-8").splitlines()
        for line_no, text in enumerate(lines, 1):
            if text.strip():
                jobs.extend(parse_line(line_no, text))
        if jobs and all(j.record is None for j in jobs[:20]):
            raise UserError(f"--src {self.src}: expected JSON objects with instruction/input_images/output_image "
                            f"per line, found {lines[0][:60]!r}")
        return jobs

    def job_id(self, job: JsonlJob) -> str:
        return f"line{job.line}" + (f"_{job.output_index}" if job.output_index else "")

    def job_task(self, job: JsonlJob) -> str:
        return task_name(job.record.get("task_type")) if job.record else "(unparseable line)"

    def open(self) -> "JsonlMaker":
        return JsonlMaker(self.images, self.args)


def inside(path: Path, folder: Path) -> bool:
    """Whether `path`, with `..` and symlinks resolved, stays in `folder`."""
    return path.resolve().is_relative_to(folder.resolve())


class JsonlMaker(SampleMaker):
    def __init__(self, images: Path, args: argparse.Namespace):
        self.images, self.args = images, args

    def load(self, path: str):
        full = self.images / path  # absolute paths stay absolute
        if not self.args.allow_outside and not inside(full, self.images):
            raise SkipSample("outside_images", f"{path} leads outside --images {self.images} (--allow-outside "
                                               "reads it)")
        img = load_image(full, max_pixels=self.args.max_pixels)
        ext = KEEP_EXTS.get(Path(path).suffix.lower().lstrip("."), "png")
        return cap_longest_side(img, self.args.resolution), ext

    def make(self, index: int, job: JsonlJob) -> BuiltSample:
        record = job.record
        if record is None or job.output is None or not isinstance(record.get("instruction"), str):
            raise SkipSample("bad_metadata", f"line {job.line}: needs instruction and output_image")
        inputs = record.get("input_images") or []
        if not isinstance(inputs, list):
            raise SkipSample("bad_metadata", f"line {job.line}: input_images is not a list")
        try:
            check_placeholders(record["instruction"], len(inputs))
        except SampleError as exc:
            raise SkipSample("bad_metadata", f"line {job.line}: {exc}") from None
        loaded = [self.load(p) for p in inputs]
        output, out_ext = self.load(job.output)
        return BuiltSample(
            key=key_for(JsonlBuilder.name, index), task=task_name(record.get("task_type")),
            instruction=record["instruction"], inputs=[InputImage(img, "input", ext) for img, ext in loaded],
            output=output, output_ext=out_ext,
            source={"dataset": Path(self.args.src).name, "line": job.line, "task_type": record.get("task_type"),
                    "ids": list(inputs) + [job.output]})


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="build-jsonl", description=__doc__.splitlines()[0])
    p.add_argument("--src", required=True, help="OmniGen JSONL file")
    p.add_argument("--images", default=None, help="folder the image paths are relative to (default: images/ beside "
                                                  "the file if it exists, else the file's folder)")
    p.add_argument("--allow-outside", action="store_true",
                   help="also read paths that lead outside --images (absolute, '..', symlinks out)")
    add_common_args(p, resolution=1024)  # only shrinks: OmniGen's toy data keeps native sizes up to 1024
    return p


def main(argv: list[str] | None = None) -> int:
    return run_main(make_parser, JsonlBuilder, argv)


if __name__ == "__main__":
    sys.exit(main())
