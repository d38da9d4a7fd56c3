"""Contract 1 — the `omnideft.sample/1` shard format, shared by the writer (format/writer.py) and the reader
(data/shards.py).

A sample is the tar members sharing one key: `KEY.json`, `KEY.in0.<ext>` … `KEY.in{n-1}.<ext>`, `KEY.out.<ext>`.
This module only knows names and metadata; it imports nothing heavy.
"""

from __future__ import annotations

import re
from typing import Any

SCHEMA = "omnideft.sample/1"
IMAGE_EXTS = ("jpg", "png", "webp")
# Keys never contain a dot: webdataset splits key/field at the first dot of the basename.
KEY_RE = re.compile(r"^[A-Za-z0-9_-]+$")
TAG_RE = re.compile(r"<\|image_(\d+)\|>")
TASK_RE = re.compile(r"^[a-z0-9_]+(/[a-z0-9_]+){1,2}$")
CAMERA_KEYS = ("model", "params", "width", "height", "q_wxyz", "t", "convention")


class SampleError(ValueError):
    """A sample's metadata breaks contract 1. The message names the field."""


def check_key(key: str) -> str:
    if not KEY_RE.match(key):
        raise SampleError(f"sample key {key!r} must match {KEY_RE.pattern} (no dots, no slashes)")
    return key


def input_member(index: int, ext: str) -> str:
    return f"in{index}.{ext}"


def output_member(ext: str) -> str:
    return f"out.{ext}"


def tag_numbers(text: str) -> list[int]:
    """Every `<|image_k|>` number in order of appearance, repeats kept."""
    return [int(m.group(1)) for m in TAG_RE.finditer(text)]


def placeholder_numbers(instruction: str) -> list[int]:
    """Distinct `<|image_k|>` numbers in order of first appearance."""
    return list(dict.fromkeys(tag_numbers(instruction)))


def placeholder_mismatch(numbers: list[int], n_inputs: int) -> str | None:
    """None when tags are 1..n without gaps for n inputs (OmniGen's rule), else a message naming the tags."""
    nums, want = set(numbers), set(range(1, n_inputs + 1))
    missing, extra = sorted(want - nums), sorted(nums - want)
    if not (missing or extra):
        return None
    parts = []
    if missing:
        parts.append("missing " + ", ".join(f"<|image_{k}|>" for k in missing))
    if extra:
        parts.append("extra " + ", ".join(f"<|image_{k}|>" for k in extra))
    return f"placeholders do not match the {n_inputs} input image(s): " + "; ".join(parts)


def check_placeholders(instruction: str, n_inputs: int) -> None:
    problem = placeholder_mismatch(placeholder_numbers(instruction), n_inputs)
    if problem:
        raise SampleError("instruction " + problem)


def validate_meta(meta: dict[str, Any]) -> dict[str, Any]:
    """Check a `KEY.json` dict against contract 1; returns it unchanged or raises SampleError naming the field."""
    if meta.get("schema") != SCHEMA:
        raise SampleError(f"schema is {meta.get('schema')!r}, expected {SCHEMA!r}")
    for field, typ in (("task", str), ("instruction", str), ("inputs", list), ("output", dict)):
        if not isinstance(meta.get(field), typ):
            raise SampleError(f"field {field!r} missing or not a {typ.__name__}")
    if not TASK_RE.match(meta["task"]):
        raise SampleError(f"task {meta['task']!r} is not <source>/<family>[/<variant>] in lower_snake_case")
    for i, inp in enumerate(meta["inputs"]):
        _check_image_entry(inp, f"inputs[{i}]", expect_member_prefix=f"in{i}.")
    _check_image_entry(meta["output"], "output", expect_member_prefix="out.")
    check_placeholders(meta["instruction"], len(meta["inputs"]))
    cam = meta.get("camera")
    if cam is not None:
        if not isinstance(cam, dict):
            raise SampleError("field 'camera' must be null or an object")
        for k in CAMERA_KEYS:
            if k not in cam:
                raise SampleError(f"camera.{k} missing")
    w = meta.get("weight", 1.0)
    if not isinstance(w, (int, float)) or w < 0:
        raise SampleError(f"weight {w!r} must be a non-negative number")
    return meta


def _check_image_entry(entry: Any, where: str, expect_member_prefix: str) -> None:
    if not isinstance(entry, dict):
        raise SampleError(f"{where} must be an object")
    member = entry.get("member")
    if not isinstance(member, str) or not member.startswith(expect_member_prefix):
        raise SampleError(f"{where}.member {member!r} must start with {expect_member_prefix!r}")
    if member.rsplit(".", 1)[-1] not in IMAGE_EXTS:
        raise SampleError(f"{where}.member {member!r} must end in one of {IMAGE_EXTS}")
    for dim in ("width", "height"):
        v = entry.get(dim)
        if not isinstance(v, int) or v <= 0:
            raise SampleError(f"{where}.{dim} must be a positive integer, got {v!r}")


class ManifestError(ValueError):
    """A `manifest.json` breaks contract 1 where a reader relies on it. The message names the field."""


def validate_manifest(manifest: Any) -> dict[str, Any]:
    """Check what readers take from a `manifest.json` (its shard list: each shard's name and sample count, and its
    bytes and sha256 where given); returns it unchanged or raises ManifestError naming the field."""
    if not isinstance(manifest, dict):
        raise ManifestError(f"the manifest must be a JSON object, got a {type(manifest).__name__}")
    shards = manifest.get("shards")
    if not isinstance(shards, list):
        raise ManifestError(f"field 'shards' missing or not a list, got {shards!r:.60}")
    for i, shard in enumerate(shards):
        if not isinstance(shard, dict):
            raise ManifestError(f"shards[{i}] must be an object, got {shard!r:.60}")
        name = shard.get("name")
        if not isinstance(name, str) or not name or "/" in name:
            raise ManifestError(f"shards[{i}].name must be a file name, got {name!r:.60}")
        for count in ("samples", "bytes"):
            value = shard.get(count)
            if (count == "samples" or value is not None) and (type(value) is not int or value < 0):
                raise ManifestError(f"shards[{i}].{count} ({name}) must be a non-negative integer, got {value!r:.60}")
        sha = shard.get("sha256")
        if sha is not None and not (isinstance(sha, str) and re.fullmatch(r"[0-9a-f]{64}", sha)):
            raise ManifestError(f"shards[{i}].sha256 ({name}) must be 64 lowercase hex digits, got {sha!r:.60}")
    return manifest
