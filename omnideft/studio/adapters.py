"""The adapters the studio offers: every adapter folder under the given paths (an adapter folder, a run folder with
`adapter/` and `checkpoints/step-N/`, or a folder of runs), described from its `omnideft.json` and checked against
the loaded base."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from omnideft.adapters.folder import read_adapter_config, read_adapter_meta
from omnideft.camera.conditioning import read_camera_config
from omnideft.errors import UserError
from omnideft.studio.paths import shown_path

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
SKIPPED_PREFIXES = (".tmp-", ".old-")  # folders being written or replaced (adapters/folder.py)


@dataclass
class AdapterEntry:
    path: Path
    label: str  # the folder relative to the root it was found under
    method: str | None = None
    rank: int | None = None
    base: str | None = None
    fingerprint: str | None = None
    step: int | None = None
    recipe: dict | None = None
    camera: str | None = None  # the camera encoding (learned | text) of a camera adapter
    problem: str | None = None  # why it cannot be used with the loaded base; shown instead of a weight slider
    note: str | None = None  # a warning that does not stop it

    @property
    def usable(self) -> bool:
        return self.problem is None

    def summary(self) -> str:
        """One line: method, rank, step, camera, base, the recipe's data."""
        parts = [self.method or "unknown method"]
        if self.rank:
            parts.append(f"rank {self.rank}")
        if self.step is not None:
            parts.append(f"step {self.step}")
        if self.camera:
            parts.append(f"camera ({self.camera})")
        if self.base:
            parts.append(f"base {shown_path(self.base)}")
        data = ((self.recipe or {}).get("data") or {}).get("shards")
        if data:
            shards = [d if isinstance(d, str) else str(d.get("path", d)) for d in data]
            parts.append("recipe data " + ", ".join(shown_path(s) for s in shards))
        return " · ".join(parts)


def is_adapter_folder(path: Path) -> bool:
    return all((path / f).is_file() for f in ADAPTER_FILES)


def find_adapters(roots: list[str]) -> tuple[list[AdapterEntry], list[str]]:
    """Every adapter folder under `roots`, in path order, and one message per root that holds none."""
    entries: list[AdapterEntry] = []
    messages: list[str] = []
    seen: set[Path] = set()
    for root in roots:
        root_path = Path(root)
        if not root_path.exists():
            messages.append(f"adapters: {root} does not exist")
            continue
        if is_adapter_folder(root_path):
            folders = [root_path]
        else:
            folders = sorted(p.parent for p in root_path.rglob(ADAPTER_FILES[0])
                             if is_adapter_folder(p.parent) and not _hidden(p.parent, root_path))
        if not folders:
            messages.append(f"adapters: no adapter folder under {root} (a folder with {' + '.join(ADAPTER_FILES)})")
        for folder in folders:
            if folder.resolve() in seen:
                continue
            seen.add(folder.resolve())
            # the root's own name and what lies under it; an adapter folder given directly keeps its run's name
            top = root_path.parent.parent if folder == root_path else root_path.parent
            entries.append(describe_adapter(folder, str(folder.absolute().relative_to(top.absolute()))))
    return entries, messages


def _hidden(folder: Path, root: Path) -> bool:
    return any(part.startswith(SKIPPED_PREFIXES) for part in folder.relative_to(root).parts)


def describe_adapter(folder: Path, label: str) -> AdapterEntry:
    entry = AdapterEntry(path=folder, label=label)
    try:
        meta = read_adapter_meta(folder)
        config = read_adapter_config(folder)
        camera = read_camera_config(folder)
    except UserError as exc:
        entry.problem = str(exc)
        return entry
    recipe = meta.get("recipe") if isinstance(meta.get("recipe"), dict) else None
    adapter_section = (recipe or {}).get("adapter") or {}
    entry.recipe = recipe
    entry.method = meta.get("method") or adapter_section.get("method") or config.get("omnideft_method") or \
        (str(config["peft_type"]).lower() if config.get("peft_type") else None)
    rank = adapter_section.get("rank") or config.get("r") or (config.get("spec") or {}).get("rank")
    entry.rank = int(rank) if isinstance(rank, (int, float)) else None
    entry.base = (meta.get("base") or {}).get("name")
    entry.fingerprint = (meta.get("base") or {}).get("fingerprint")
    entry.step = meta.get("step")
    entry.camera = camera["encoding"] if camera else None
    if not meta:
        entry.note = "no omnideft.json: a plain PEFT folder, its base is not recorded"
    return entry


def check_base(entry: AdapterEntry, model_name: str, fingerprint: str, embedding_rows: int | None) -> None:
    """Mark `entry` unusable when it was trained on a base of another shape (load_adapter would refuse it), and note
    a base of the same shape under another name. A camera adapter whose `<cam>` row lies beyond the table grows
    the table when loaded, so its fingerprint can only be checked then (`embedding_rows` None: the base takes no
    camera token)."""
    if entry.problem or not entry.fingerprint:
        return
    if entry.fingerprint != fingerprint:
        token_id = _camera_token_id(entry.path)
        if token_id is not None and embedding_rows is not None and token_id >= embedding_rows:
            entry.note = "its camera token grows the embedding table: the base is checked when it is selected"
            return
        entry.problem = (f"trained on another base: {shown_path(entry.base or '?')} ({entry.fingerprint}); this "
                         f"model is {shown_path(model_name)} ({fingerprint})")
    elif entry.base and not _same_model(entry.base, model_name):
        entry.note = f"trained on {shown_path(entry.base)}; this model is {shown_path(model_name)} (same shape)"


def _camera_token_id(folder: Path) -> int | None:
    try:
        return json.loads((folder / "camera.json").read_text()).get("token_id")
    except (OSError, json.JSONDecodeError, AttributeError):
        return None


def _same_model(a: str, b: str) -> bool:
    if a == b:
        return True
    pa, pb = Path(a), Path(b)
    return pa.exists() and pb.exists() and pa.resolve() == pb.resolve()
