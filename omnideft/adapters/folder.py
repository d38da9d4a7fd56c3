"""Contract 2 — the adapter folder: PEFT's two files (loadable by stock PEFT) plus `omnideft.json`.

Written to a temporary sibling folder and renamed into place, so a crash never leaves a half-written adapter.
"""

from __future__ import annotations

import json
import shutil
import time
from importlib.metadata import version
from pathlib import Path

from peft import PeftModel
from torch import nn

from omnideft.adapters.fingerprint import base_fingerprint
from omnideft.errors import UserError

FORMAT = "omnideft.adapter/1"


def save_adapter(model: PeftModel, out_dir: str | Path, *, base_name: str, recipe: dict | None = None,
                 step: int | None = None, state_dict: dict | None = None) -> Path:
    out = Path(out_dir)
    tmp = out.with_name(f".tmp-{out.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    name = model.active_adapter if isinstance(model.active_adapter, str) else next(iter(model.peft_config))
    model.save_pretrained(tmp, state_dict=state_dict, safe_serialization=True, selected_adapters=[name])
    if name != "default":  # PEFT nests non-default adapters in a sub-folder; the contract wants them at the top
        for f in (tmp / name).iterdir():
            f.rename(tmp / f.name)
        (tmp / name).rmdir()
    for module in model.get_base_model().modules():  # non-PEFT parts write their own files (camera encoder)
        save_files = getattr(module, "save_adapter_files", None)
        if callable(save_files):
            save_files(tmp, state_dict=state_dict)
    meta = {
        "format": FORMAT,
        "base": {"name": base_name, "fingerprint": base_fingerprint(model.get_base_model())},
        "adapter_name": name,
        "peft_type": str(model.peft_config[name].peft_type.value),
        "step": step,
        "recipe": recipe,
        "versions": {p: version(p) for p in ("omnideft", "peft", "diffusers", "torch")},
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (tmp / "omnideft.json").write_text(json.dumps(meta, indent=2, default=str) + "\n")
    old = out.with_name(f".old-{out.name}")
    if out.exists():
        shutil.rmtree(old, ignore_errors=True)
        out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)
    return out


def read_adapter_meta(folder: str | Path) -> dict:
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"adapter {folder} is not a directory")
    if (folder / "adapter_model.bin").exists() and not (folder / "adapter_model.safetensors").exists():
        raise UserError(f"adapter {folder} holds a pickle (adapter_model.bin); only safetensors are loaded")
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        if not (folder / name).is_file():
            raise UserError(f"adapter {folder} is missing {name}")
    meta_path = folder / "omnideft.json"
    if not meta_path.is_file():
        return {}
    try:
        return json.loads(meta_path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"adapter {meta_path} is not valid JSON: {exc}") from None


def load_adapter(transformer: nn.Module, folder: str | Path, adapter_name: str = "default",
                 is_trainable: bool = False) -> PeftModel:
    """Check the base fingerprint, then load with stock PEFT."""
    meta = read_adapter_meta(folder)
    want = meta.get("base", {}).get("fingerprint")
    have = base_fingerprint(transformer)
    if want and want != have:
        raise UserError(f"adapter {folder} was trained on a base of another shape "
                        f"({meta['base'].get('name')}, {want}); this model is {have}")
    try:
        return PeftModel.from_pretrained(transformer, str(folder), adapter_name=adapter_name,
                                         is_trainable=is_trainable)
    except Exception as exc:  # safetensors/PEFT errors on truncated or mismatched files
        raise UserError(f"cannot load adapter {folder}: {str(exc).splitlines()[0]}") from None
