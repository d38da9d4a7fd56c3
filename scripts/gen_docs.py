"""Regenerate the generated parts of docs/recipes.md, docs/commands.md, docs/models.md, docs/memory.md and
docs/export.md from the code (recipe schemas, argparse, the small card, the planner, the families' export clients).

Run `python scripts/gen_docs.py`; tests/test_docs.py fails when the docs are stale.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ["COLUMNS"] = "100"  # argparse wraps help text to the terminal width; docs must not depend on it

REPO = Path(__file__).resolve().parents[1]
MARKERS = "<!-- {}:begin -->", "<!-- {}:end -->"


def recipe_keys_md() -> str:
    from omnideft.train.recipe import recipe_help

    return "```yaml\n" + recipe_help() + "\n```"


def pretrain_keys_md() -> str:
    from omnideft.families.omnigen.pretrain.recipe import PretrainRecipe
    from omnideft.options import options_help

    return "```yaml\n" + options_help(PretrainRecipe) + "\n```"


def commands_md() -> str:
    from omnideft.cli import build_parser

    parser = build_parser()
    out = []
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    for name, p in sub.choices.items():
        p.prog = f"omnideft {name}"
        out.append(f"### omnideft {name}\n\n```\n{p.format_help().rstrip()}\n```\n")
    return "\n".join(out)


def small_card_md() -> str:
    """The `small` model card's numbers, from the files shipped with it (pretrain.json, heldout.json)."""
    import json

    from omnideft.families.omnigen.model.small import SMALL_DIR, SMALL_SHA256

    record = json.loads((SMALL_DIR / "pretrain.json").read_text())
    heldout = json.loads((SMALL_DIR / "heldout.json").read_text())
    m, v, t, d = (record["recipe"][k] for k in ("model", "vae", "train", "data"))
    loss = record["loss"]
    tail = sum(loss[-100:]) / len(loss[-100:])
    lines = [
        "| | |", "|---|---|",
        f"| transformer | hidden {m['hidden_size']}, {m['num_layers']} blocks, {m['num_heads']} heads, MLP "
        f"{m['intermediate_size']}, {record['parameters']:,} parameters (fp32) |",
        f"| VAE | 8× down, {v.get('latent_channels', 4)} latent channels, {v['channels']} channels per block, fitted "
        f"{v['fit_steps']} steps "
        f"(reconstruction MSE {record['vae_reconstruction_mse']:.4f}) |",
        f"| pretraining | {t['steps']} steps × batch {t['batch_size']} at {d['image_size']} px, lr {t['lr']:g} "
        f"(warm-up {t['warmup_steps']}, cosine to {t['min_lr_ratio']:g} × lr), tasks: {', '.join(d['tasks'])} |",
        f"| loss | {sum(loss[:100]) / 100:.4f} (first 100 steps) → {tail:.4f} (last 100) |",
        f"| time | {record['seconds']['total'] / 60:.0f} min on 2 CPU cores ({record['torch_threads']} torch threads; "
        f"VAE fit {record['seconds']['vae_fit'] / 60:.1f} min), torch {record['versions']['torch']}, diffusers "
        f"{record['versions']['diffusers']} |",
        "", "| file | sha256 |", "|---|---|",
        *(f"| `{rel}` | `{digest}` |" for rel, digest in SMALL_SHA256.items()),
        "", f"**Held-out task metrics** ({heldout['queries_per_task']} queries per task, seed {heldout['seed']}; "
        "`heldout.png` shows two per task):", "",
        "| task | IoU | colour error |", "|---|---|---|",
        *(f"| {task} | {row['iou']:.3f} | {row['colour_error']:.1f} |" for task, row in heldout["tasks"].items()
          if task != "mean"),
        f"| **mean** | {heldout['tasks']['mean']['iou']:.3f} | {heldout['tasks']['mean']['colour_error']:.1f} |",
    ]
    return "\n".join(lines)


def memory_plans_md() -> str:
    from omnideft.plan.report import REFERENCE_OVERRIDES, REFERENCE_RECIPE, reference_plans_md
    from omnideft.train.recipe import load_recipe

    return reference_plans_md(load_recipe(REPO / REFERENCE_RECIPE, list(REFERENCE_OVERRIDES)))


def export_matrix_md() -> str:
    """The client matrix of docs/export.md, from each family's `export_formats` declaration."""
    from omnideft.families.registry import all_export_formats, all_families

    out = []
    for family in all_families():
        out += [f"**{family.title}** (`--family {family.name}`)", "",
                "| `--format` | loaded by | how | versions tested | test | notes |", "|---|---|---|---|---|---|"]
        for fmt, clients in family.export_formats.items():
            for client in clients:
                out.append(f"| `{fmt}` | {client.name} | `{client.call}` | {client.versions} | `{client.test}` | "
                           f"{client.note} |")
        absent = [f for f in all_export_formats() if f not in family.export_formats]
        if absent:
            out += ["", f"Not offered (no program loads them for {family.title}; export refuses them in one line): "
                    + ", ".join(f"`{f}`" for f in absent) + "."]
        out.append("")
    return "\n".join(out).rstrip()


def splice(path: Path, body: str, marker: str = "generated") -> str:
    begin, end = (m.format(marker) for m in MARKERS)
    text = path.read_text()
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{begin}\n{body}\n{end}{tail}"


# file -> [(marker, function that writes what stands between its begin and end comments)]
TARGETS = {"docs/recipes.md": [("generated", recipe_keys_md)], "docs/commands.md": [("generated", commands_md)],
           "docs/models.md": [("card", small_card_md), ("generated", pretrain_keys_md)],
           "docs/memory.md": [("plans", memory_plans_md)], "docs/export.md": [("matrix", export_matrix_md)]}

if __name__ == "__main__":
    for rel, parts in TARGETS.items():
        path = REPO / rel
        for marker, fn in parts:
            path.write_text(splice(path, fn(), marker))
        print("wrote", rel)
    sys.exit(0)
