"""Entry points. Thin: parse, validate, call. A UserError becomes one line on stderr and exit code 2.

Every verb is a module of omnideft/commands/ (its flags and its run); this file lists them and turns their errors into
one line. A new verb is one module there plus one line in COMMANDS.
"""

from __future__ import annotations

import argparse
import errno
import sys

from omnideft.commands import (
    bench,
    cache_latents,
    check_shards,
    convert_original,
    demo,
    export,
    generate,
    plan,
    pretrain,
    studio,
    train,
)
from omnideft.commands import eval as evaluate  # not to shadow the builtin
from omnideft.errors import UserError
from omnideft.files import is_disk_full, is_path_error

# In the order `omnideft --help` lists them.
COMMANDS = [train, generate, studio, demo, pretrain, evaluate, bench, export, check_shards, plan, cache_latents,
            convert_original]


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # `section.key=value` overrides may come before or after flags; argparse alone takes them only before.
    if extra and hasattr(args, "overrides") and all("=" in x and not x.startswith("-") for x in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.parse_args(argv)  # the usual "unrecognized arguments" message and exit 2
    args.argv = list(sys.argv[1:] if argv is None else argv)  # recorded in score tables
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args) or 0
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:
        # a write outside atomic_path (logs, a library's own files): still one line naming the file
        if is_disk_full(exc):
            print(f"error: cannot write {exc.filename or 'a file'}: {exc.strerror or exc}; free some space and run "
                  "again", file=sys.stderr)
            return 2
        if is_path_error(exc) and exc.filename:  # no permission, read-only, a file where a folder goes (or back)
            hint = " (a file stands where a folder is needed)" if exc.errno in (errno.ENOTDIR, errno.EEXIST) else ""
            print(f"error: cannot use {exc.filename}: {exc.strerror or exc}{hint}", file=sys.stderr)
            return 2
        raise
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="omnideft", description="DEFT adapters for OmniGen: train, generate, demo.")
    sub = p.add_subparsers(metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub).set_defaults(func=command.run)
    return p


if __name__ == "__main__":
    sys.exit(main())
