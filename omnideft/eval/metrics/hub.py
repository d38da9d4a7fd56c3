"""Load a metric's transformers model and its image processor from a hub id or a local folder, once per process.

A local folder must hold `config.json`, the weights (`model.safetensors`, a sharded index or `pytorch_model.bin`)
and its image processor's config: `preprocessor_config.json` (an image processor's save_pretrained) or
`processor_config.json` (a processor's, e.g. CLIPProcessor's, in current transformers); text models also need a
tokenizer. Missing pieces, a model of the wrong family, or
a hub id that is not cached while offline are one-line errors naming the flag.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

from omnideft.errors import UserError

PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")  # AutoImageProcessor reads either
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "tokenizer_config.json")


def check_folder(path: Path, flag: str, tokenizer: bool = False) -> None:
    missing = [] if any((path / f).is_file() for f in PROCESSOR_FILES) else [" or ".join(PROCESSOR_FILES)]
    if not any((path / f).is_file() for f in WEIGHT_FILES):
        missing.append("model.safetensors")
    if tokenizer and not any((path / f).is_file() for f in TOKENIZER_FILES):
        missing.append("tokenizer.json")
    if missing:
        raise UserError(f"{flag} {path}: the folder lacks {', '.join(missing)} (save the model with "
                        "save_pretrained and its processor beside it)")


@functools.lru_cache(maxsize=8)
def load_model(model_class: str, name: str, flag: str, device: str, model_types: tuple[str, ...],
               tokenizer: bool = False, model_kwargs: tuple[tuple[str, object], ...] = ()):
    """(model in eval mode on `device`, image processor, tokenizer or None). `model_class` names a transformers class;
    `model_types` are the accepted `config.model_type` values (empty = any); `model_kwargs` go to from_pretrained."""
    import transformers
    from transformers import AutoConfig, AutoImageProcessor, AutoTokenizer

    transformers.utils.logging.disable_progress_bar()  # a weight-loading bar per metric model clutters the tables

    path = Path(name)
    local = path.exists()
    if local:
        if not path.is_dir():
            raise UserError(f"{flag} {name}: expected a model folder, found a file")
        if not (path / "config.json").is_file():
            raise UserError(f"{flag} {name}: the folder lacks config.json (not a transformers model folder)")
    elif name.count("/") != 1:
        raise UserError(f"{flag} {name!r}: neither a local folder nor a hub id (owner/name)")
    try:
        config = AutoConfig.from_pretrained(name)
        if model_types and config.model_type not in model_types:
            raise UserError(f"{flag} {name}: a {config.model_type} model, expected {' or '.join(model_types)}")
        if local:
            check_folder(path, flag, tokenizer)
        model = getattr(transformers, model_class).from_pretrained(name, **dict(model_kwargs))
        processor = AutoImageProcessor.from_pretrained(name)
        tok = AutoTokenizer.from_pretrained(name) if tokenizer else None
    except (OSError, ValueError) as exc:
        if local:
            raise UserError(f"{flag} {name}: cannot load ({str(exc).splitlines()[0]})") from None
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        raise UserError(f"{flag} {name!r} is not in the local Hugging Face cache; it needs the network"
                        + (" (HF_HUB_OFFLINE=1 is set)" if offline else "") + " or a local folder") from None
    return model.to(device).eval().requires_grad_(False), processor, tok
