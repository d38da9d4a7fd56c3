"""`build-merge DIR`: combine the part manifests of a partitioned build into one `manifest.json`.

Each `--partition I/N` run writes `manifest.part-IIII-of-NNNN.json` next to its shards. When all N parts are
there and describe the same build, their shards (verified by size and sha256) become one manifest, identical in
content to the manifest of an unpartitioned build except for `args.partition`, `extra.merged_from` and the time.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from omnideft.data.format.writer import (
    MANIFEST_NAME,
    ShardRecord,
    SkipTally,
    build_manifest,
    file_sha256,
    write_json_atomic,
)
from omnideft.errors import UserError

from .cli_common import RUN_ONLY_ARGS

PART_RE = re.compile(r"^manifest\.part-(\d{4})-of-(\d{4})\.json$")
IDENTITY_FIELDS = ("builder", "builder_version", "source_fingerprint", "split")


def find_parts(split_dir: Path) -> list[tuple[int, int, dict]]:
    parts = []
    for path in sorted(split_dir.glob("manifest.part-*.json")):
        m = PART_RE.match(path.name)
        if m:
            parts.append((int(m.group(1)), int(m.group(2)), json.loads(path.read_text())))
    if not parts:
        raise UserError(f"{split_dir}: expected part manifests manifest.part-IIII-of-NNNN.json, found none")
    counts = {n for _, n, _ in parts}
    if len(counts) != 1:
        raise UserError(f"{split_dir}: part manifests disagree on the number of parts ({sorted(counts)})")
    n = counts.pop()
    missing = sorted(set(range(n)) - {i for i, _, _ in parts})
    if missing:
        raise UserError(f"{split_dir}: parts {missing} of {n} are missing (not built yet, or still running)")
    return parts


def build_args(args: dict) -> dict:
    return {k: v for k, v in args.items() if k not in RUN_ONLY_ARGS}


def check_same_build(parts: list[tuple[int, int, dict]]) -> None:
    first = parts[0][2]
    for i, _, m in parts[1:]:
        for f in IDENTITY_FIELDS:
            if m.get(f) != first.get(f):
                raise UserError(f"part {i} has {f} {m.get(f)!r}, part 0 has {first.get(f)!r}: not the same build")
        if build_args(m["args"]) != build_args(first["args"]):
            raise UserError(f"part {i} was built with different arguments than part 0")


def merged_manifest(split_dir: Path, parts: list[tuple[int, int, dict]], verify: bool) -> dict:
    records, tasks, captions, skips = [], {}, {}, SkipTally()
    for _, _, m in parts:
        for entry in m["shards"]:
            shard = split_dir / entry["name"]
            if not shard.is_file():
                raise UserError(f"{shard}: listed in a part manifest but missing")
            if shard.stat().st_size != entry["bytes"] or (verify and file_sha256(shard) != entry["sha256"]):
                raise UserError(f"{shard}: size or sha256 differs from its part manifest")
            records.append(ShardRecord(entry["name"], entry["samples"], entry["bytes"], entry["sha256"]))
        for task, count in m["tasks"].items():
            tasks[task] = tasks.get(task, 0) + count
        for source, count in m.get("captions", {}).items():
            captions[source] = captions.get(source, 0) + count
        skips.merge(m["skipped"])
    records.sort(key=lambda r: r.name)
    first = parts[0][2]
    merged = build_manifest(records, builder=first["builder"], builder_version=first["builder_version"],
                            args={**first["args"], "partition": None}, source_fingerprint=first["source_fingerprint"],
                            split=first["split"], extra={**first.get("extra", {}),
                                                         "merged_from": [f"{i}/{n}" for i, n, _ in parts]})
    merged["tasks"] = dict(sorted(tasks.items()))
    merged["skipped"] = skips.to_json()
    if captions:
        merged["captions"] = dict(sorted(captions.items()))
    return merged


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="build-merge", description=__doc__.splitlines()[0])
    p.add_argument("dir", help="the split directory holding the parts' shards and manifests (<out>/<split>), "
                               "or <out> together with --split")
    p.add_argument("--split", default=None, help="split name when DIR is the output directory")
    p.add_argument("--no-verify", action="store_true", help="check sizes only, skip sha256 of every shard")
    args = p.parse_args(argv)
    try:
        split_dir = Path(args.dir) / args.split if args.split else Path(args.dir)
        if not split_dir.is_dir():
            raise UserError(f"{split_dir}: expected a split directory, found nothing")
        parts = find_parts(split_dir)
        check_same_build(parts)
        manifest = merged_manifest(split_dir, parts, verify=not args.no_verify)
        write_json_atomic(split_dir / MANIFEST_NAME, manifest)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"merged {len(parts)} parts: {manifest['samples']} samples in {len(manifest['shards'])} shards -> "
          f"{split_dir / MANIFEST_NAME}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
