"""omnideft check-shards DIR: verify a shard directory (contract 1) without torch."""

from __future__ import annotations

from pathlib import Path

from omnideft.data.format.check import check_command


def add_parser(sub):
    c = sub.add_parser("check-shards", help="verify a shard directory (counts, schema, images, checksums)")
    c.add_argument("dir", help="an output directory (<out>) or one split directory (<out>/<split>)")
    return c


def run(args) -> int:
    return check_command(Path(args.dir))
