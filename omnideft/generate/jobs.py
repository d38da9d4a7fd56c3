"""Batch jobs for `omnideft generate --jobs FILE.jsonl --out DIR`: one JSON object a line, read and checked before
the model loads, rendered with one Generator.

A line: {"prompt": str, "images": [path], "examples": [[in, out]], "seed": int, "height": int, "width": int,
"camera": "11 numbers" or [11 numbers], "n": int}; only "prompt" is required, the rest default to the command line's
options. Relative paths are taken from the jobs file's folder. Line L (1-based, as an editor counts) writes
DIR/LLLL.png (DIR/LLLL_k.png, k = 0..n-1, for n > 1) and then DIR/LLLL_sheet.png, each under a temporary name first:
a line whose sheet exists is done and skipped on a rerun. A bad line (unknown key, missing image, placeholders that
don't match, a number out of its range, a size the model can't do, ...) is reported and skipped; the rest run.
DIR/jobs_report.json lists every line's status (done, skipped, failed with the reason).

One run at a time writes DIR (a folder lock: a second run is refused, naming the first), and DIR/run.json records the
settings the images were made with: a rerun with other settings is refused naming them, unless `overwrite` (then
the images are deleted and every line is rendered again).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from PIL import Image

from omnideft.camera.parse import parse_camera
from omnideft.claims import RECORD, claim_output
from omnideft.data.format.schema import tag_numbers
from omnideft.errors import UserError
from omnideft.files import TMP_PREFIX, atomic_path, read_user_text, remove_path
from omnideft.generate.contact_sheet import contact_sheet, stack_rows
from omnideft.generate.settings import check_number, check_seeds
from omnideft.images import load_image
from omnideft.locks import FolderLock
from omnideft.progress import progress_bar
from omnideft.prompts.tags import check_tags

JOB_KEYS = ("prompt", "images", "examples", "seed", "height", "width", "camera", "n")
REPORT = "jobs_report.json"
# What a jobs run writes in DIR: LLLL.png, LLLL_k.png, LLLL_sheet.png (more digits past line 9999), the report, and
# their temporary copies (`.tmp-NAME.PID`).
OUTPUT_NAME = re.compile(r"^(\d{4,}(_\d+)?(_sheet)?\.png|" + re.escape(REPORT) + ")$")
TEMPORARY_NAME = re.compile(r"^" + re.escape(TMP_PREFIX) + r"(\d{4,}(_\d+)?(_sheet)?\.png|" + re.escape(REPORT) +
                            "|" + re.escape(RECORD) + r")(\.\d+)?$")
OVERWRITE_HINT = "use another --out, or --overwrite to delete its images and render every line again"


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
    text = read_user_text(path, "--jobs", "a JSONL file (one JSON object a line)")
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
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool):
            raise UserError(f"'{key}' must be an integer, got {value!r}")
        check_number(key, value, f"'{key}'")  # the command line's ranges (generate/settings.py)
        setattr(job, key, value)
    if job.seed is not None:
        check_seeds(job.seed, job.n, "'seed'")
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
             settings: dict, overwrite: bool = False, progress: bool = True,
             log: Callable[[str], None] = print) -> dict:
    """Render every good line not done yet. `make_generator()` loads the model (called once, only when a line
    needs it); `render(generator, job)` returns the line's n images; `settings` is everything else the pixels
    depend on (recorded in DIR/run.json). Returns the report (also written to DIR/jobs_report.json):
    {"done": [...], "skipped": [...], "failed": {line: reason}}."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out {out_dir} is a file; with --jobs it is the output folder")
    # The lock first: a second run into DIR is refused before it reads (and loads the images of) its jobs, and
    # nothing below (the settings check, what is done, the temporaries) can change under this run.
    with FolderLock(out_dir, "--out"):
        jobs, failed = read_jobs(jobs_file)  # before the record is written: a jobs file refused leaves no record
        _remove_temporaries(out_dir)
        images = any(p.suffix == ".png" for p in _outputs(out_dir))
        if overwrite or not images:  # no image made with other settings can pass for one of these
            _remove_outputs(out_dir)
        elif not (out_dir / RECORD).exists():
            raise UserError(f"{out_dir} holds images without a record of the settings they were made with "
                            f"({RECORD}); {OVERWRITE_HINT}")
        claim_output(out_dir, settings, {}, "images", OVERWRITE_HINT)
        for number, reason in failed.items():  # after the settings check: a refusal stays one line
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
                _save_png(image, path)
            sheets = [contact_sheet(job.examples, job.images, image) for image in images]
            _save_png(stack_rows(sheets), job.sheet(out_dir))  # last: the sheet marks the line done
            done.append(job.line)
        report = {"jobs": str(jobs_file), "done": done, "skipped": skipped,
                  "failed": {str(k): v for k, v in sorted(failed.items())}}
        with atomic_path(out_dir / REPORT, unique=True) as tmp:
            tmp.write_text(json.dumps(report, indent=2) + "\n")
    return report


def _save_png(image: Image.Image, path: Path) -> None:
    # A temporary name of this process (`.tmp-NAME.PID`): another writer of the same name (a plain `generate
    # --out DIR/0001.png`) never deletes or renames this run's half-written file.
    with atomic_path(path, unique=True) as tmp:
        image.save(tmp, format="PNG")


def _outputs(out_dir: Path) -> list[Path]:
    return [p for p in out_dir.iterdir() if OUTPUT_NAME.match(p.name)]


def _remove_outputs(out_dir: Path) -> None:
    """The images (and report) of the earlier settings go, and with them their record, before any new image is
    written (--overwrite): a run killed half-way never leaves old images that a rerun would take as done."""
    for path in _outputs(out_dir):
        remove_path(path)
    remove_path(out_dir / RECORD)


def _remove_temporaries(out_dir: Path) -> None:
    """Temporary copies a killed run left (named by its pid, so no later run would replace them); safe under the
    lock: no other jobs run is writing here."""
    for path in out_dir.iterdir():
        if TEMPORARY_NAME.match(path.name):
            remove_path(path)
