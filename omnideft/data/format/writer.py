"""Contract 1 writer: deterministic webdataset tar shards plus `manifest.json`, written last.

Layout: `<out>/<split>/<prefix>-%06d.tar` and `<out>/<split>/manifest.json`. A shard is written as
`.tmp-<name>` and renamed only when complete. Members of a sample are written json -> in0.. -> out with mtime 0,
uid/gid 0 and empty user/group names, so the same samples give byte-identical shards.

Simple use (shards roll every `shard_size` samples):

    with ShardWriter(out, split="train", builder="demo", builder_version="1", args={...}) as w:
        w.add(BuiltSample(...))
        w.skip("corrupt", "id123")
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import io
import json
import os
import re
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from omnideft.data.format.images import encode_image
from omnideft.data.format.schema import SCHEMA, check_key, input_member, output_member, validate_meta
from omnideft.files import TMP_PREFIX, atomic_path

MANIFEST_FORMAT = "omnideft.manifest/1"
MANIFEST_NAME = "manifest.json"
STATE_DIR = ".state"
MAX_SKIP_EXAMPLES = 5
# Argument names (split at "_" or "-") holding a secret: any of SECRET_WORDS, or "token" qualified by a
# TOKEN_QUALIFIERS word (api_token, hf_token). A bare `token` is DreamBooth's subject word, not a credential.
SECRET_WORDS = {"key", "apikey", "secret", "password", "passwd", "auth", "credential", "credentials"}
TOKEN_QUALIFIERS = {"api", "access", "auth", "hf", "bearer", "refresh", "bot", "github", "gh", "session", "secret"}


@dataclass
class InputImage:
    image: Image.Image
    role: str
    ext: str = "png"


@dataclass
class BuiltSample:
    key: str
    task: str
    instruction: str
    inputs: list[InputImage]
    output: Image.Image
    output_ext: str = "png"
    camera: dict | None = None
    caption: str | None = None
    source: dict = field(default_factory=dict)
    weight: float = 1.0
    extra: dict = field(default_factory=dict)  # additional top-level json fields, e.g. input_cameras
    caption_source: str | None = None  # who wrote `caption` ("model", "template"): counted in the manifest


@dataclass
class EncodedSample:
    """A sample ready for the tar: member names (without key) and bytes, in write order."""

    key: str
    task: str
    members: list[tuple[str, bytes]]
    caption_source: str | None = None


def image_tag(k: int) -> str:
    """OmniGen's placeholder for input image k (1-based)."""
    return f"<img><|image_{k}|></img>"


def image_tags(n: int, start: int = 1) -> str:
    return " ".join(image_tag(k) for k in range(start, start + n))


def sample_meta(sample: BuiltSample) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "schema": SCHEMA,
        "task": sample.task,
        "instruction": sample.instruction,
        "inputs": [
            {"member": input_member(i, inp.ext), "width": inp.image.width, "height": inp.image.height, "role": inp.role}
            for i, inp in enumerate(sample.inputs)
        ],
        "output": {"member": output_member(sample.output_ext), "width": sample.output.width,
                   "height": sample.output.height},
        "camera": sample.camera,
        "caption": sample.caption,
        "source": sample.source,
        "weight": float(sample.weight),
    }
    meta.update(sample.extra)
    return meta


def encode_sample(sample: BuiltSample) -> EncodedSample:
    """Validate against contract 1 and encode every image (runs in worker processes)."""
    check_key(sample.key)
    meta = validate_meta(sample_meta(sample))
    members = [("json", json.dumps(meta, ensure_ascii=False).encode("utf-8"))]
    for i, inp in enumerate(sample.inputs):
        members.append((input_member(i, inp.ext), encode_image(inp.image, inp.ext)))
    members.append((output_member(sample.output_ext), encode_image(sample.output, sample.output_ext)))
    return EncodedSample(sample.key, sample.task, members, sample.caption_source)


class SkipTally:
    """Counts per reason plus the lexicographically smallest example ids, so merged tallies equal one big run."""

    def __init__(self, data: dict | None = None, max_examples: int = MAX_SKIP_EXAMPLES):
        self.max_examples = max_examples
        self.data: dict[str, dict] = {}
        for reason, entry in (data or {}).items():
            self.data[reason] = {"count": int(entry["count"]), "examples": list(entry["examples"])}

    def add(self, reason: str, sample_id: str, count: int = 1) -> None:
        entry = self.data.setdefault(reason, {"count": 0, "examples": []})
        entry["count"] += count
        if sample_id and sample_id not in entry["examples"]:
            entry["examples"] = sorted(entry["examples"] + [str(sample_id)])[: self.max_examples]

    def merge(self, other: "SkipTally | dict") -> None:
        data = other.data if isinstance(other, SkipTally) else other
        for reason, entry in data.items():
            self.add(reason, "", entry["count"])
            for ex in entry["examples"]:
                self.add(reason, ex, 0)

    def to_json(self) -> dict:
        return {r: {"count": e["count"], "examples": list(e["examples"])} for r, e in sorted(self.data.items())}


def skip_summary(skipped: dict, top: int = 3) -> str:
    """'missing: 6, e.g. view_0.jpg: images/view_0.jpg; corrupt: 1, e.g. ...' from a manifest's skip records, the
    most frequent reasons first."""
    reasons = sorted(skipped.items(), key=lambda kv: (-kv[1]["count"], kv[0]))[:top]
    return "; ".join(f"{reason}: {e['count']}" + (f", e.g. {e['examples'][0]}" if e["examples"] else "")
                     for reason, e in reasons) or "no skip recorded"


@dataclass
class ShardRecord:
    name: str
    samples: int
    bytes: int
    sha256: str
    tasks: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, dict] = field(default_factory=dict)
    captions: dict[str, int] = field(default_factory=dict)  # caption source -> samples

    def manifest_entry(self) -> dict:
        return {"name": self.name, "samples": self.samples, "bytes": self.bytes, "sha256": self.sha256}

    def to_json(self) -> dict:
        return {**self.manifest_entry(), "tasks": dict(sorted(self.tasks.items())), "skipped": self.skipped,
                "captions": dict(sorted(self.captions.items()))}

    @classmethod
    def from_json(cls, d: dict) -> "ShardRecord":
        return cls(d["name"], int(d["samples"]), int(d["bytes"]), d["sha256"], dict(d.get("tasks", {})),
                   dict(d.get("skipped", {})), dict(d.get("captions", {})))


def shard_name(prefix: str, index: int) -> str:
    return f"{prefix}-{index:06d}.tar"


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_json_atomic(path: Path, obj: Any) -> None:
    with atomic_path(path, unique=True) as tmp:  # parts of a partitioned build (and captioner workers) may race here
        tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def is_secret_arg(name: str) -> bool:
    """api_key, hf_token, password... are secrets; token, keep_tokens, max_keyframes are not; *_env names an
    environment variable (the secret itself is not in the arguments)."""
    words = set(re.split(r"[_\-]+", name.lower()))
    if name.lower().endswith("_env"):
        return False
    return bool(words & SECRET_WORDS) or ("token" in words and bool(words & TOKEN_QUALIFIERS))


def redact_args(args: dict[str, Any]) -> dict[str, Any]:
    """Drop values of arguments that look like secrets; URLs lose user:password@ and query strings."""
    clean: dict[str, Any] = {}
    for k, v in args.items():
        if is_secret_arg(k):
            clean[k] = "<redacted>" if v else v
        elif isinstance(v, str) and "://" in v:
            clean[k] = re.sub(r"//[^/@]*@", "//", v).split("?", 1)[0]
        else:
            clean[k] = v
    return clean


def _tar_info(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


class _OpenShard:
    """One shard being written under its temporary name."""

    def __init__(self, split_dir: Path, index: int, prefix: str):
        self.index = index
        self.name = shard_name(prefix, index)
        self.final_path = split_dir / self.name
        self.tmp_path = split_dir / (TMP_PREFIX + self.name)
        # tarfile, not wds.TarWriter: TarWriter stamps uname "bigdata" and its own member order; contract 1 fixes
        # json -> in0.. -> out and empty names.
        self.tar = tarfile.open(self.tmp_path, "w", format=tarfile.USTAR_FORMAT)
        self.samples = 0
        self.tasks: dict[str, int] = {}
        self.captions: dict[str, int] = {}
        self.skips = SkipTally()

    def write(self, sample: EncodedSample) -> None:
        for member, data in sample.members:
            self.tar.addfile(_tar_info(f"{sample.key}.{member}", len(data)), io.BytesIO(data))
        self.samples += 1
        self.tasks[sample.task] = self.tasks.get(sample.task, 0) + 1
        if sample.caption_source:
            self.captions[sample.caption_source] = self.captions.get(sample.caption_source, 0) + 1

    def finish(self) -> ShardRecord:
        self.tar.close()
        with open(self.tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(self.tmp_path, self.final_path)
        return ShardRecord(self.name, self.samples, self.final_path.stat().st_size, file_sha256(self.final_path),
                           self.tasks, self.skips.to_json(), self.captions)

    def abandon(self) -> None:
        self.tar.close()  # leaves only .tmp-<name>, which a rerun removes and redoes


class ShardWriter:
    """Writes shards and the manifest of one split. See the module docstring for the simple API.

    The build runner drives shards explicitly (`open_shard(k)`, `add_encoded`, `close_shard`, `adopt`) with
    `auto_roll=False`, so shard k always holds the same source range whatever the worker count or partition.
    """

    def __init__(self, out_dir: str | os.PathLike, split: str = "train", prefix: str = "shard",
                 shard_size: int = 1000, builder: str = "", builder_version: str = "", args: dict | None = None,
                 source_fingerprint: str = "", manifest_name: str = MANIFEST_NAME, auto_roll: bool = True,
                 keep_state: bool = False, partition: str | None = None, extra: dict | None = None):
        if shard_size < 1:
            raise ValueError("shard_size must be >= 1")
        self.split_dir = Path(out_dir) / split
        self.split_dir.mkdir(parents=True, exist_ok=True)
        self.split, self.prefix, self.shard_size = split, prefix, shard_size
        self.builder, self.builder_version = builder, builder_version
        self.args = redact_args(dict(args or {}))
        self.source_fingerprint = source_fingerprint
        self.manifest_name, self.auto_roll, self.partition = manifest_name, auto_roll, partition
        self.state_dir = self.split_dir / STATE_DIR if keep_state else None
        self.extra = dict(extra or {})
        self.records: dict[int, ShardRecord] = {}
        self.loose_skips = SkipTally()  # skips seen while no shard is open (simple API)
        self._open: _OpenShard | None = None
        self._next_index = 0

    # -- simple API -------------------------------------------------------------------------------------------
    def add(self, sample: BuiltSample) -> None:
        self.add_encoded(encode_sample(sample))

    def skip(self, reason: str, sample_id: str) -> None:
        (self._open.skips if self._open else self.loose_skips).add(reason, str(sample_id))

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            if self._open:
                self._open.abandon()
                self._open = None
            return
        self.close()

    def close(self) -> Path:
        if self._open:
            self.close_shard()
        return self.write_manifest()

    # -- explicit shard control (build runner) ----------------------------------------------------------------
    def open_shard(self, index: int) -> None:
        if self._open:
            raise RuntimeError(f"shard {self._open.name} is still open")
        self._open = _OpenShard(self.split_dir, index, self.prefix)
        self._next_index = index + 1

    def add_encoded(self, sample: EncodedSample) -> None:
        if self._open is None:
            self.open_shard(self._next_index)
        self._open.write(sample)
        if self.auto_roll and self._open.samples >= self.shard_size:
            self.close_shard()

    def close_shard(self) -> ShardRecord:
        record = self._open.finish()
        self._open = None
        self.records[int(record.name.rsplit("-", 1)[1].split(".")[0])] = record
        if self.state_dir:
            self.state_dir.mkdir(exist_ok=True)
            write_json_atomic(self.state_dir / f"{record.name}.json", record.to_json())
        return record

    def adopt(self, index: int, record: ShardRecord) -> None:
        """Count a complete shard kept from an earlier (interrupted) run."""
        self.records[index] = record

    # -- manifest ---------------------------------------------------------------------------------------------
    def manifest(self) -> dict:
        return build_manifest(
            [self.records[k] for k in sorted(self.records)], builder=self.builder,
            builder_version=self.builder_version, args=self.args, source_fingerprint=self.source_fingerprint,
            split=self.split, partition=self.partition, extra=self.extra, loose_skips=self.loose_skips)

    def write_manifest(self) -> Path:
        path = self.split_dir / self.manifest_name
        write_json_atomic(path, self.manifest())
        return path


def build_manifest(records: list[ShardRecord], *, builder: str, builder_version: str, args: dict,
                   source_fingerprint: str, split: str, partition: str | None = None, extra: dict | None = None,
                   loose_skips: SkipTally | None = None) -> dict:
    tasks: dict[str, int] = {}
    captions: dict[str, int] = {}
    skips = SkipTally()
    for rec in records:
        for task, n in rec.tasks.items():
            tasks[task] = tasks.get(task, 0) + n
        for source, n in rec.captions.items():
            captions[source] = captions.get(source, 0) + n
        skips.merge(rec.skipped)
    if loose_skips:
        skips.merge(loose_skips)
    manifest = {
        "format": MANIFEST_FORMAT,
        "sample_schema": SCHEMA,
        "builder": builder,
        "builder_version": builder_version,
        "args": args,
        "source_fingerprint": source_fingerprint,
        "split": split,
        "partition": partition,
        "shards": [r.manifest_entry() for r in records],
        "samples": sum(r.samples for r in records),
        "tasks": dict(sorted(tasks.items())),
        "skipped": skips.to_json(),
        "extra": extra or {},
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if captions:  # builders with a captioner: how many captions the model wrote, how many are templates
        manifest["captions"] = dict(sorted(captions.items()))
    return manifest
