"""Which model family a model name or folder is: `omnigen` (v1, one Phi-3 transformer, diffusers layout with
tokenizer/) or `omnigen2` (Qwen2.5-VL + diffusion transformer, published layout with mllm/ and processor/).

Read from `model_index.json` (`_class_name` OmniGenPipeline / OmniGen2Pipeline) and, without it, from the
subfolders; anything else is a one-line UserError naming the folder. Torch-free: recipes check it before loading.
"""

from __future__ import annotations

import json
from pathlib import Path

from omnideft.errors import UserError

FAMILIES = ("omnigen", "omnigen2")
PIPELINE_CLASSES = {"OmniGenPipeline": "omnigen", "OmniGen2Pipeline": "omnigen2"}
LABELS = {"omnigen": "OmniGen (v1)", "omnigen2": "OmniGen2"}
TINY = "tiny"  # the randomly initialised preset every family builds from its config (the tests' model)
PRESETS = (TINY, "small")  # preset names win over folders of the same name (as model.loading reads them)
SUBFOLDERS = {
    "omnigen": ("transformer", "vae", "tokenizer", "scheduler"),
    "omnigen2": ("transformer", "vae", "mllm", "processor", "scheduler"),
}


def detect_family(folder: str | Path) -> str:
    path = Path(folder)
    if not path.is_dir():
        raise UserError(f"{folder} is not a directory")
    index = path / "model_index.json"
    if index.is_file():
        try:
            name = json.loads(index.read_text()).get("_class_name")
        except (json.JSONDecodeError, AttributeError):
            raise UserError(f"{index} is not a JSON object") from None
        if name not in PIPELINE_CLASSES:
            raise UserError(f"{folder} is neither OmniGen nor OmniGen2: model_index.json names {name!r}, "
                            f"not one of {', '.join(PIPELINE_CLASSES)}")
        return PIPELINE_CLASSES[name]
    for family in ("omnigen2", "omnigen"):
        if all((path / sub).is_dir() for sub in SUBFOLDERS[family]):
            return family
    raise UserError(f"{folder} is neither OmniGen nor OmniGen2: no model_index.json and not the subfolders of "
                    f"either ({'/, '.join(SUBFOLDERS['omnigen'])}/ or {'/, '.join(SUBFOLDERS['omnigen2'])}/)")


def check_family(family: str) -> str:
    if family not in FAMILIES:
        raise UserError(f"model.family {family!r} is not one of {', '.join(FAMILIES)}")
    return family


def resolve_family(name: str, family: str = "auto", recorded: str | None = None) -> str:
    """The family a model name means (`model.family` of a recipe, `--family` of a command): `auto` reads a local
    folder and takes `omnigen` for hub ids and presets - or, for a preset, `recorded`, the family the adapter in use
    was trained on; a family named for a folder of the other one is one line naming both. `tiny` with a family is
    that family's tiny preset."""
    if family != "auto":
        check_family(family)
    elif recorded in FAMILIES and name in PRESETS:
        family = recorded
    path = Path(name).expanduser()
    if name not in PRESETS and path.is_dir():
        found = detect_family(path)
        if family not in ("auto", found):
            raise UserError(f"{name} is an {LABELS[found]} folder, but the family asked for is {LABELS[family]} "
                            f"({family}); drop model.family / --family or name an {LABELS[family]} folder")
        return found
    if family == "omnigen2" and name != "tiny":
        raise UserError(f"model {name!r}: OmniGen2 loads from 'tiny' or a local folder in the published layout "
                        "(download OmniGen2/OmniGen2 first); hub ids and the 'small' preset are OmniGen (v1) only")
    return "omnigen" if family == "auto" else family
