"""The adapter on OmniGen2's MLLM (`adapter.mllm_targets: language`): the same method as on the transformer, injected
into the Qwen2.5-VL language model's decoder linears (q/k/v/o, gate/up/down; never the vision tower or lm_head).

While it trains, the adapted MLLM is registered as the transformer's submodule `mllm_adapter` (as the camera encoder
is for v1): the engine, the optimizer, checkpoints and exact resume then see its parameters by name with no code of
their own, and fingerprints and the transformer's PEFT files skip it (fingerprint.MLLM). In the adapter folder it
is two files beside the transformer's stock PEFT files, which stay loadable as before:

    mllm_adapter.json         {"format", "spec", "target_modules", "mllm_weights"}: the method's settings, the MLLM's
                              module names it adapts, the weights fingerprint of the MLLM it was trained on
    mllm_adapter.safetensors  the adapter tensors, named as PEFT's get_peft_model_state_dict names them for a PeftModel
                              of the whole Qwen2_5_VLForConditionalGeneration (own-injection methods: their
                              adapter_state_dict names)
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from omnideft.adapters.export import adapter_deltas, merge_deltas, unload
from omnideft.adapters.fingerprint import weights_differ, weights_fingerprint
from omnideft.adapters.folder import read_finite_tensors, read_json_config
from omnideft.adapters.registry import get_method
from omnideft.adapters.spec import AdapterSpec
from omnideft.errors import UserError

ATTRIBUTE = "mllm_adapter"
CONFIG_FILE = "mllm_adapter.json"
WEIGHTS_FILE = "mllm_adapter.safetensors"
FORMAT = "omnideft.mllm-adapter/1"
# Qwen2.5-VL in transformers: model.language_model.layers.N.{self_attn.q_proj, ..., mlp.down_proj}; the vision
# tower (model.visual.blocks.N.mlp.gate_proj, ...) has linears of the same names, hence the anchored pattern.
LANGUAGE_LINEAR = re.compile(r"(^|\.)language_model\.layers\.\d+\.(self_attn\.[qkvo]_proj|mlp\.(gate|up|down)_proj)$")


def language_targets(mllm: nn.Module) -> list[str]:
    """Full module names of the language model's decoder linears."""
    names = [n for n, m in mllm.named_modules() if isinstance(m, nn.Linear) and LANGUAGE_LINEAR.search(n)]
    if not names:
        raise UserError(f"adapter.mllm_targets: the MLLM ({type(mllm).__name__}) has no language-model decoder "
                        "linears (language_model.layers.N.self_attn.q_proj, ...)")
    return names


def _inject(mllm: nn.Module, spec: AdapterSpec, targets: list[str]) -> nn.Module:
    spec = dataclasses.replace(spec, targets=list(targets), include_embedders=False, mllm_targets="none")
    return get_method(spec.method).inject(mllm, spec, list(targets), "default")


class MLLMAdapter(nn.Module):
    """The adapted MLLM (`adapted`: PeftModel or AdapterModel, injected in place into the MLLM the trainer encodes
    prompts with) as a submodule of the transformer, with what the adapter folder needs to write it."""

    def __init__(self, adapted: nn.Module, spec: AdapterSpec, targets: list[str], mllm_weights):
        super().__init__()
        self.adapted = adapted
        self.spec = spec
        self.targets = list(targets)
        self.mllm_weights = mllm_weights

    def adapter_tensors(self, state_dict: dict | None = None) -> dict[str, torch.Tensor]:
        """The file's tensors; `state_dict`: the whole model's (the trainer's gathered copy), else the live ones."""
        prefix = ATTRIBUTE + ".adapted."
        sub = None if state_dict is None else {k.split(prefix, 1)[1]: v for k, v in state_dict.items() if prefix in k}
        if hasattr(self.adapted, "adapter_state_dict"):
            own = self.adapted.adapter_state_dict()
            return own if sub is None else {k: sub.get(f"base_model.{k}", sub.get(k, v)) for k, v in own.items()}
        from peft import get_peft_model_state_dict

        return get_peft_model_state_dict(self.adapted, state_dict=sub, adapter_name="default")

    def save_adapter_files(self, folder: Path, state_dict: dict | None = None) -> None:
        """Called by adapters/folder.save_adapter."""
        tensors = self.adapter_tensors(state_dict)
        save_file({k: v.detach().to("cpu", torch.float32).contiguous() for k, v in tensors.items()},
                  str(Path(folder) / WEIGHTS_FILE))
        config = {"format": FORMAT, "spec": dataclasses.asdict(self.spec), "target_modules": self.targets,
                  "mllm_weights": self.mllm_weights}
        (Path(folder) / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")


def attach_mllm_adapter(transformer: nn.Module, mllm: nn.Module, spec: AdapterSpec) -> MLLMAdapter:
    """Inject `spec`'s method into `mllm`'s language layers (in place; everything else of the MLLM is frozen) and
    register it as `transformer.mllm_adapter`. Call after the transformer's adapter, before the optimizer."""
    weights = weights_fingerprint(mllm)
    targets = language_targets(mllm)
    holder = MLLMAdapter(_inject(mllm, spec, targets), spec, targets, weights)
    setattr(transformer, ATTRIBUTE, holder)
    return holder


def has_mllm_adapter(folder: str | Path) -> bool:
    return (Path(folder) / CONFIG_FILE).is_file()


def _read_config(folder: Path) -> dict:
    return read_json_config(folder / CONFIG_FILE, FORMAT)


def load_mllm_adapter(mllm: nn.Module, folder: str | Path) -> nn.Module:
    """Inject the folder's MLLM adapter into `mllm` (in place, frozen, eval) and load its tensors; returns the
    wrapper (PeftModel / AdapterModel; `unload` of adapters/export.py removes it). One line when the MLLM has other
    weights or the tensors do not match."""
    folder = Path(folder)
    config = _read_config(folder)
    if (bucket := weights_differ(config.get("mllm_weights"), weights_fingerprint(mllm))) is not None:
        raise UserError(f"adapter {folder}: its MLLM part was trained on an MLLM with other weights than this one "
                        f"(weights fingerprint differs at bucket {bucket})")
    tensors = read_finite_tensors(folder / WEIGHTS_FILE)
    known = {f.name for f in dataclasses.fields(AdapterSpec)}
    spec = AdapterSpec(**{k: v for k, v in config.get("spec", {}).items() if k in known})
    model = _inject(mllm, spec, config["target_modules"])
    try:
        if hasattr(model, "load_adapter_state_dict"):
            model.load_adapter_state_dict(tensors)
        else:
            from peft import get_peft_model_state_dict, set_peft_model_state_dict

            want = set(get_peft_model_state_dict(model, adapter_name="default"))
            if want != set(tensors):
                odd = sorted(want ^ set(tensors))[0]
                raise ValueError(f"tensor {odd} is {'missing' if odd in want else 'unexpected'}")
            set_peft_model_state_dict(model, tensors, adapter_name="default")
    except (ValueError, RuntimeError, KeyError) as exc:
        unload(model)
        raise UserError(f"cannot load adapter {folder / WEIGHTS_FILE}: {str(exc).splitlines()[0]}") from None
    get_method(spec.method).after_peft_load(model)  # DEFT layers take the fast forward, as on the transformer
    for p in model.parameters():
        p.requires_grad_(False)
    model.eval()
    return model


def merge_mllm_adapters(mllm: nn.Module, adapters: list[tuple[str, float]]) -> nn.Module:
    """W <- W + sum of w x delta over the adapters that carry an MLLM part (each delta taken on the untouched MLLM,
    as adapters/compose.py does for the transformer); returns the plain MLLM."""
    weighted = []
    for folder, weight in adapters:
        if has_mllm_adapter(folder):
            model = load_mllm_adapter(mllm, folder)
            weighted.append((weight, adapter_deltas(model)))
            mllm = unload(model)
    merge_deltas(mllm, weighted)
    return mllm
