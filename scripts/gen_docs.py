"""Regenerate the generated parts of docs/recipes.md and docs/commands.md from the code (recipe schema, argparse).

Run `python scripts/gen_docs.py`; tests/test_docs.py fails when the docs are stale.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ["COLUMNS"] = "100"  # argparse wraps help text to the terminal width; docs must not depend on it

REPO = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- generated:begin -->", "<!-- generated:end -->"


def recipe_keys_md() -> str:
    from omnideft.train.recipe import recipe_help

    return "```yaml\n" + recipe_help() + "\n```"


def commands_md() -> str:
    from omnideft.cli import build_parser

    parser = build_parser()
    out = []
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    for name, p in sub.choices.items():
        p.prog = f"omnideft {name}"
        out.append(f"### omnideft {name}\n\n```\n{p.format_help().rstrip()}\n```\n")
    return "\n".join(out)


def splice(path: Path, body: str) -> str:
    text = path.read_text()
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{body}\n{END}{tail}"


TARGETS = {"docs/recipes.md": recipe_keys_md, "docs/commands.md": commands_md}

if __name__ == "__main__":
    for rel, fn in TARGETS.items():
        path = REPO / rel
        path.write_text(splice(path, fn()))
        print("wrote", rel)
    sys.exit(0)
