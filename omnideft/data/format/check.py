"""The contract-1 checker behind `omnideft check-shards DIR` and `build-check DIR`: shards against the schema and
their manifest.

Checks counts, schema (`validate_meta`), placeholder/input agreement, member names and order, decodes every image
and compares its size with the json, and verifies each shard's sha256/bytes/samples against `manifest.json`.
`check_command` prints one line per problem and a summary; exit 0 when clean, 2 otherwise.
"""

from __future__ import annotations

import io
import json
import math
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from PIL import Image

from omnideft.data.format.schema import SampleError, validate_manifest, validate_meta
from omnideft.data.format.writer import MANIFEST_NAME, file_sha256, skip_summary
from omnideft.errors import UserError
from omnideft.files import TMP_PREFIX


@dataclass
class CheckReport:
    shards: int = 0
    samples: int = 0
    images: int = 0
    tasks: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def problem(self, where: str, what: str) -> None:
        self.problems.append(f"{where}: {what}")


def group_members(tar: tarfile.TarFile, unsafe: list[tuple[str, str]] | None = None
                  ) -> Iterator[tuple[str, list[tuple[str, bytes]]]]:
    """Consecutive members sharing a key (webdataset's rule: key = basename up to its first dot), streamed.
    Members whose names could write outside a folder are left out and listed in `unsafe` as (name, why)."""
    key, members = None, []
    for info in tar:
        if not info.isfile():
            continue
        why = bad_member_name(info.name)
        if why:
            if unsafe is not None:
                unsafe.append((info.name, why))
            continue
        k, _, fieldname = info.name.partition(".")
        if members and k != key:
            yield key, members
            members = []
        key = k
        members.append((fieldname, tar.extractfile(info).read()))
    if members:
        yield key, members


def bad_member_name(name: str) -> str | None:
    """Why a member name could write outside an extraction folder (absolute, `..`, a folder), or None."""
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return "member name is absolute"
    if ".." in name.split("/"):
        return "member name climbs out of the folder with '..'"
    if "/" in name:
        return "member name has a folder (contract-1 keys have no slashes)"
    return None


def camera_values_problem(cam: dict) -> str | None:
    """Non-finite numbers, a zero or non-unit quaternion, or a non-positive size in a camera record, or None."""
    try:
        numbers = [float(x) for key in ("params", "q_wxyz", "t") for x in cam[key]]
        numbers += [float(x) for x in cam.get("vector") or []]
        q = [float(x) for x in cam["q_wxyz"]]
        width, height = int(cam["width"]), int(cam["height"])
    except (TypeError, ValueError, KeyError) as exc:
        return f"camera values are not numbers ({exc})"
    if not all(math.isfinite(x) for x in numbers):
        return "camera has non-finite values"
    norm = math.sqrt(sum(x * x for x in q))
    if len(q) != 4 or abs(norm - 1) > 1e-3:
        return f"camera quaternion q_wxyz {q} is not unit (norm {norm:.6g})"
    if width <= 0 or height <= 0:
        return f"camera size {width}x{height} is not positive"
    return None


def check_sample(where: str, members: list[tuple[str, bytes]], report: CheckReport) -> None:
    names = [n for n, _ in members]
    if not names or names[0] != "json":
        report.problem(where, f"first member must be json, found {names[:1]}")
        return
    try:
        meta = validate_meta(json.loads(members[0][1].decode("utf-8")))
    except (SampleError, ValueError) as exc:
        report.problem(where, f"bad json: {exc}")
        return
    report.tasks[meta["task"]] = report.tasks.get(meta["task"], 0) + 1
    for label, cam in [("camera", meta.get("camera"))] + [(f"input_cameras[{i}]", c)
                                                           for i, c in enumerate(meta.get("input_cameras") or [])]:
        problem = camera_values_problem(cam) if isinstance(cam, dict) else None
        if problem:
            report.problem(where, f"{label}: {problem}")
    entries = list(meta["inputs"]) + [meta["output"]]
    expected = ["json"] + [e["member"] for e in entries]
    if names != expected:
        report.problem(where, f"members {names} do not match json (expected {expected})")
        return
    for entry, (_, data) in zip(entries, members[1:]):
        check_image(f"{where}.{entry['member']}", data, entry, report)


def check_image(where: str, data: bytes, entry: dict, report: CheckReport) -> None:
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            size = img.size
    except Exception as exc:  # any decoder failure is a problem to report, not a crash
        report.problem(where, f"does not decode ({exc})")
        return
    report.images += 1
    if size != (entry["width"], entry["height"]):
        report.problem(where, f"image is {size[0]}x{size[1]}, json says {entry['width']}x{entry['height']}")


def check_shard(path: Path, report: CheckReport) -> int:
    seen: set[str] = set()
    unsafe: list[tuple[str, str]] = []
    try:
        with tarfile.open(path) as tar:
            for key, members in group_members(tar, unsafe):
                if key in seen:
                    report.problem(f"{path.name}:{key}", "key appears twice (members not consecutive)")
                seen.add(key)
                check_sample(f"{path.name}:{key}", members, report)
    except (tarfile.TarError, OSError) as exc:
        report.problem(path.name, f"not a readable tar ({exc})")
    for name, why in unsafe:
        report.problem(f"{path.name}:{name}", why)
    report.shards += 1
    report.samples += len(seen)
    return len(seen)


def check_manifest(split_dir: Path, counts: dict[str, int], report: CheckReport) -> None:
    path = split_dir / MANIFEST_NAME
    if not path.is_file():
        report.problem(str(split_dir), f"no {MANIFEST_NAME} (build unfinished, or parts not merged with build-merge)")
        return
    try:
        manifest = validate_manifest(json.loads(path.read_text()))
    except ValueError as exc:  # not JSON, not UTF-8, or a field readers rely on is wrong (ManifestError)
        report.problem(MANIFEST_NAME, str(exc))
        return
    listed = {s["name"]: s for s in manifest["shards"]}
    for name in sorted(set(counts) - set(listed)):
        report.problem(name, "shard on disk is not in the manifest")
    for name, entry in listed.items():
        shard = split_dir / name
        if not shard.is_file():
            report.problem(name, "listed in the manifest but missing")
            continue
        if shard.stat().st_size != entry.get("bytes"):
            report.problem(name, f"{shard.stat().st_size} bytes, manifest says {entry.get('bytes')}")
        if file_sha256(shard) != entry.get("sha256"):
            report.problem(name, "sha256 differs from the manifest")
        if counts.get(name) != entry["samples"]:
            report.problem(name, f"{counts.get(name)} samples, manifest says {entry['samples']}")
    if not report.samples and not report.problems:
        skipped = manifest.get("skipped") or {}
        report.problem(MANIFEST_NAME, "no samples" + (f" (every planned sample was skipped: {skip_summary(skipped)})"
                                                      if skipped else ""))
    if manifest.get("tasks") != dict(sorted(report.tasks.items())) and not report.problems:
        report.problem(MANIFEST_NAME, f"task counts {manifest.get('tasks')} differ from the shards' {report.tasks}")


def split_dirs(root: Path) -> list[Path]:
    """DIR may be one split directory or an output directory holding split directories."""
    if any(root.glob("*.tar")) or (root / MANIFEST_NAME).is_file():
        return [root]
    return sorted(p for p in root.iterdir() if p.is_dir() and (any(p.glob("*.tar")) or (p / MANIFEST_NAME).is_file()))


def check_dir(root: Path) -> list[tuple[Path, CheckReport]]:
    results = []
    for split_dir in split_dirs(root):
        report = CheckReport()
        counts = {p.name: check_shard(p, report) for p in sorted(split_dir.glob("*.tar"))
                  if not p.name.startswith(TMP_PREFIX)}
        check_manifest(split_dir, counts, report)
        results.append((split_dir, report))
    return results


def check_command(root: Path) -> int:
    """Check DIR, print one line per problem and a summary per split; 0 when clean, 2 otherwise."""
    if not root.is_dir():
        raise UserError(f"{root} is not a directory")
    results = check_dir(root)
    if not results:
        raise UserError(f"{root} holds no shards (*.tar) and no {MANIFEST_NAME}")
    bad = False
    for split_dir, report in results:
        for line in report.problems:
            print(f"problem: {split_dir.name}/{line}")
        tasks = ", ".join(f"{t}={n}" for t, n in sorted(report.tasks.items()))
        print(f"{split_dir}: {report.shards} shards, {report.samples} samples, {report.images} images, "
              f"{len(report.problems)} problems; tasks: {tasks or '-'}")
        bad = bad or bool(report.problems)
    return 2 if bad else 0
