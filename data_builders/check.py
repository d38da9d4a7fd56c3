"""`build-check DIR`: verify shards against contract 1 and their manifest.

A thin command over the contract-1 checker (omnideft/data/format/check.py), which `omnideft check-shards` runs too.
Prints one line per problem and a summary; exit 0 when clean, 2 otherwise.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from omnideft.data.format.check import check_command
from omnideft.errors import UserError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="build-check", description=__doc__.splitlines()[0])
    parser.add_argument("dir", help="an output directory (<out>) or one split directory (<out>/<split>)")
    args = parser.parse_args(argv)
    try:
        return check_command(Path(args.dir))
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
