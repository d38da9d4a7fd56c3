"""The `small` preset: a pretrained OmniGen at toy scale that ships inside the package (docs/models.md).

OmniGen's architecture from diffusers, pretrained in full by `omnideft pretrain recipes/pretrain/small_base.yaml`
on family A of the procedural shape tasks (omnideft/shapes). It is what the demo and the retention benchmark adapt:
a base that knows something, so an adapter's gains and losses can be measured. Its files are checked against the
sha256 sums below (the model card gives the same sums) before anything loads, so a damaged or altered file stops
with one line.
"""

from __future__ import annotations

from pathlib import Path

from omnideft.data.format.writer import file_sha256
from omnideft.errors import UserError

SMALL = "small"
SMALL_DIR = Path(__file__).with_name("weights") / "small"
# Every file that holds weights or decides how they are read; the card (docs/models.md) lists the same sums.
SMALL_SHA256: dict[str, str] = {
    "transformer/diffusion_pytorch_model.safetensors":
        "316efaf23e253b6c2c13534828a2d3bc1b3750ff702ce203e1be4dcfe21b3caf",
    "transformer/config.json": "fd74781c11aef937b07dae9a4de72d20a251f34ab3465843df428867878538cb",
    "vae/diffusion_pytorch_model.safetensors": "7d9380de6c886d91107bba2e4a460be6db99bdbd26fdecd262316b379deef3df",
    "vae/config.json": "8fc76fc7323cb711b6f10118480ec6599528915d127c07482be8de2c2a746805",
    "tokenizer/tokenizer.json": "3d2eed1b220753bed41a2028026f5f42fb3f63f37c26828c5ff76f9fbb1a89d8",
}


def small_model_dir() -> Path:
    """The shipped folder (diffusers layout), after checking each file's sha256."""
    return verified(SMALL_DIR, SMALL_SHA256)


def verified(folder: Path, expected: dict[str, str]) -> Path:
    """`folder`, after checking the sha256 of each file `expected` names (relative path -> hex digest)."""
    for rel, want in expected.items():
        path = folder / rel
        if not path.is_file():
            raise UserError(f"model 'small': {path} is missing (expected sha256 {want}); reinstall omnideft or "
                            "rebuild it with `omnideft pretrain recipes/pretrain/small_base.yaml` (docs/models.md)")
        have = file_sha256(path)
        if have != want:
            raise UserError(f"model 'small': {path} is damaged or altered (sha256 {have}, expected {want}); "
                            "reinstall omnideft or rebuild it with "
                            "`omnideft pretrain recipes/pretrain/small_base.yaml`")
    return folder
