"""Batch jobs for `omnideft generate --jobs FILE.jsonl --out DIR`: one JSON object a line, read and checked before
the model loads, rendered with one Generator.

A line: {"prompt": str, "images": [path], "examples": [[in, out]], "seed": int, "height": int, "width": int,
"camera": "11 numbers" or [11 numbers], "n": int}; only "prompt" is required, the rest default to the command line's
options. Relative paths are taken from the jobs file's folder. Line L (1-based, as an editor counts) writes
DIR/LLLL.png (DIR/LLLL_k.png, k = 0..n-1, for n > 1) and then DIR/LLLL_sheet.png, each under a temporary name first:
a line whose sheet exists is done and skipped on a rerun. A bad line (unknown key, missing image, placeholders that
don't match, a size the model can't do, ...) is reported and skipped; the rest run. DIR/jobs_report.json lists every
line's status (done, skipped, failed with the reason).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from PIL import Image

from omnideft.camera.parse import parse_camera
from omnideft.data.format.schema import tag_numbers
from omnideft.errors import UserError
from omnideft.files import write_text_atomic
from omnideft.generate.contact_sheet import contact_sheet, stack_rows
from omnideft.images import load_image, save_image_atomic
from omnideft.progress import progress_bar
from omnideft.prompts.processor import check_tags

JOB_KEYS = ("prompt", "images", "examples", "seed", "height", "width", "camera", "n")
REPORT = "jobs_report.json"


@dataclass
class Job:
    line: int
    prompt: str
    images: list[Image.Image] = field(default_factory=list)
    examples: list[tuple[Image.Image, Image.Image]] = field(default_factory=list)
    seed: int | None = None
    height: int | None = None
    width: int | None = None
    camera: list[float] | None = None
    n: int = 1

    def outputs(self, out_dir: Path) -> list[Path]:
        stem = f"{self.line:04d}"
        if self.n == 1:
            return [out_dir / f"{stem}.png"]
        return [out_dir / f"{stem}_{k}.png" for k in range(self.n)]

    def sheet(self, out_dir: Path) -> Path:
        return out_dir / f"{self.line:04d}_sheet.png"


def read_jobs(path: str | Path) -> tuple[list[Job], dict[int, str]]:
    """The good lines as Jobs (images loaded) and the bad ones as {line: reason}. A file that cannot be read, or
    holds no line at all, is a UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--jobs {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"--jobs {path} is unreadable ({type(exc).__name__})") from None
    jobs, bad = [], {}
    for number, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        try:
            jobs.append(_parse_line(raw, number, path.parent))
        except UserError as exc:
            bad[number] = str(exc)
    if not jobs and not bad:
        raise UserError(f"--jobs {path} has no job (one JSON object a line)")
    return jobs, bad


def _parse_line(raw: str, number: int, root: Path) -> Job:
    try:
        item = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise UserError(f"not JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(item, dict):
        raise UserError(f"a line must be a JSON object with keys {', '.join(JOB_KEYS)}, got {type(item).__name__}")
    unknown = sorted(set(item) - set(JOB_KEYS))
    if unknown:
        raise UserError(f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; a line takes "
                        f"{', '.join(JOB_KEYS)}")
    prompt = item.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise UserError("'prompt' must be a non-empty string")
    images = [load_image(_path(p, root, "images")) for p in _list(item, "images")]
    examples = []
    for pair in _list(item, "examples"):
        if not (isinstance(pair, list) and len(pair) == 2):
            raise UserError(f"'examples' holds [input, output] path pairs, got {pair!r}")
        examples.append((load_image(_path(pair[0], root, "examples")), load_image(_path(pair[1], root, "examples"))))
    check_tags(tag_numbers(prompt), len(images))
    job = Job(number, prompt, images, examples)
    for key in ("seed", "height", "width", "n"):
        value = item.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            raise UserError(f"'{key}' must be an integer, got {value!r}")
        if value is not None:
            setattr(job, key, value)
    if job.n < 1:
        raise UserError(f"'n' {job.n} must be at least 1")
    camera = item.get("camera")
    if camera is not None:
        if isinstance(camera, list):
            camera = ",".join(str(v) for v in camera)
        if not isinstance(camera, str):
            raise UserError(f"'camera' must be 11 numbers (a string or a list), got {camera!r}")
        job.camera = parse_camera(camera, "'camera'")
    return job


def _list(item: dict, key: str) -> list:
    value = item.get(key) or []
    if not isinstance(value, list):
        raise UserError(f"'{key}' must be a list, got {value!r}")
    return value


def _path(value, root: Path, key: str) -> Path:
    if not isinstance(value, str):
        raise UserError(f"'{key}' holds image paths (strings), got {value!r}")
    p = Path(value)
    return p if p.is_absolute() else root / p


def run_jobs(jobs_file: str | Path, out_dir: str | Path, make_generator: Callable, render: Callable,
             progress: bool = True, log: Callable[[str], None] = print) -> dict:
    """Render every good line not done yet. `make_generator()` loads the model (called once, only when a line
    needs it); `render(generator, job)` returns the line's n images. Returns the report (also written to
    DIR/jobs_report.json): {"done": [...], "skipped": [...], "failed": {line: reason}}."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out {out_dir} is a file; with --jobs it is the output folder")
    jobs, failed = read_jobs(jobs_file)
    for number, reason in failed.items():
        log(f"line {number}: {reason}")
    todo = [j for j in jobs if not j.sheet(out_dir).exists()]
    skipped = [j.line for j in jobs if j not in todo]
    done = []
    generator = make_generator() if todo else None
    for job in progress_bar(todo, desc="jobs", unit="job", disable=not progress):
        try:
            images = render(generator, job)
        except UserError as exc:
            failed[job.line] = str(exc)
            log(f"line {job.line}: {exc}")
            continue
        for image, path in zip(images, job.outputs(out_dir)):
            save_image_atomic(image, path)
        sheets = [contact_sheet(job.examples, job.images, image) for image in images]
        save_image_atomic(stack_rows(sheets), job.sheet(out_dir))
        done.append(job.line)
    report = {"jobs": str(jobs_file), "done": done, "skipped": skipped,
              "failed": {str(k): v for k, v in sorted(failed.items())}}
    write_text_atomic(out_dir / REPORT, json.dumps(report, indent=2) + "\n")
    return report
