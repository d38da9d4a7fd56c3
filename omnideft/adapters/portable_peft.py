"""A LoRA `adapter_config.json` that every PEFT from 0.9 to the current one reads the same way.

Tools that load LoRA folders through `PeftModel.from_pretrained` often pin an old PEFT (the official OmniGen (v1)
package pins 0.9.0). PEFT builds its config class from every field of the JSON, so a field it does not know is a
TypeError: the config holds only fields PEFT 0.9 already had, and newer PEFT fills the fields it added with their
defaults.

Modules whose rank differs from `r` (e.g. a fused qkv LoRA of rank r_q + r_k + r_v) go in `rank_pattern` /
`alpha_pattern`, whose keys are regexes matched differently across versions: PEFT 0.9 takes the first key with
`re.match(rf".*\\.{key}$", name)` (the key must follow a dot, so a full top-level path never matches), current PEFT
the first with `re.match(rf"(.*\\.)?({key})$", name)`. `pattern_key` picks a key that matches its own module and no
other target under both rules.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

from omnideft.files import atomic_path


def lora_config(ranks: dict[str, int], base: str | None) -> dict:
    """The config of a LoRA with these module ranks (module name -> rank), scale 1 (alpha = rank) everywhere; `r` is
    the rank most modules have (ties: the larger), the others are patterns."""
    counts = Counter(ranks.values())
    r = max(counts, key=lambda k: (counts[k], k))
    targets = sorted(ranks)
    patterns = {pattern_key(name, targets): k for name, k in sorted(ranks.items()) if k != r}
    return {
        "peft_type": "LORA", "task_type": None, "base_model_name_or_path": base, "revision": None,
        "inference_mode": True, "r": r, "lora_alpha": r, "target_modules": targets, "lora_dropout": 0.0,
        "fan_in_fan_out": False, "bias": "none", "use_rslora": False, "modules_to_save": None,
        "init_lora_weights": True, "layers_to_transform": None, "layers_pattern": None,
        "rank_pattern": patterns, "alpha_pattern": dict(patterns),
    }


def write_lora_config(path: Path, ranks: dict[str, int], base: str | None) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(lora_config(ranks, base), indent=2) + "\n")


def pattern_key(name: str, targets: list[str]) -> str:
    """A rank_pattern key for module `name` that every PEFT matches to `name` and to no other of `targets`: the
    shortest dotted suffix that does and does not start at a layer index (readable: `layers.3.self_attn.qkv_proj`);
    else the path with its first part as a lookbehind (`(?<=^time_token\\.)mlp\\.0`); else (a one-part name, which
    PEFT 0.9 can never match) the name itself, which current PEFT reads."""
    parts = name.split(".")
    candidates = [".".join(parts[i:]) for i in range(len(parts) - 1, 0, -1) if not parts[i].isdigit()]
    if len(parts) > 1:
        candidates.append(f"(?<=^{re.escape(parts[0])}\\.){re.escape('.'.join(parts[1:]))}")
    for key in candidates:
        if all(bool(matches_peft_0_9(key, t)) == (t == name) and bool(matches_peft(key, t)) == (t == name)
               for t in targets):
            return key
    return name


def matches_peft_0_9(key: str, name: str) -> bool:
    """PEFT 0.9's rank_pattern / alpha_pattern match (tuners/lora/model.py, _create_and_replace)."""
    return re.match(rf".*\.{key}$", name) is not None


def matches_peft(key: str, name: str) -> bool:
    """Current PEFT's match (utils/other.py, get_pattern_key)."""
    return re.match(rf"(.*\.)?({key})$", name) is not None
