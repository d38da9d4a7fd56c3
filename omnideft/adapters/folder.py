"""Contract 2 — the adapter folder: `adapter_config.json` + `adapter_model.safetensors` + `omnideft.json`.

Methods PEFT knows (AdapterMethod.peft_native, e.g. lora, deft relu/qr) are exactly PEFT's files, loadable by stock
PEFT. Everything else (e.g. other DEFT projectors, soda) keeps the same two files with omnideft's own config
({"omnideft_method", "spec", "target_modules"}; no `peft_type`, so stock PEFT refuses it rather than misreading it).
Extra components (e.g. a camera encoder) ride along as `extra_tensors={"camera": {...}}` -> `camera.safetensors`
plus `extra_meta` merged into omnideft.json; read them back with read_extra_tensors().

Written to a temporary sibling folder and renamed into place, so a crash never leaves a half-written adapter.
"""

from __future__ import annotations

import dataclasses
import json
import time
from importlib.metadata import version
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from omnideft.adapters.fingerprint import MLLM, base_fingerprint, weights_differ, weights_fingerprint
from omnideft.adapters.registry import all_methods, get_method
from omnideft.adapters.spec import AdapterSpec
from omnideft.errors import UserError
from omnideft.files import atomic_path

FORMAT = "omnideft.adapter/1"
OWN_CONFIG = "omnideft.adapter-config/1"


def save_adapter(model: nn.Module, out_dir: str | Path, *, base_name: str, recipe: dict | None = None,
                 step: int | None = None, state_dict: dict | None = None,
                 extra_tensors: dict[str, dict[str, torch.Tensor]] | None = None,
                 extra_meta: dict | None = None, base_weights: list | None = None, replace: bool = False,
                 family: str | None = None) -> Path:
    """`base_weights`: the base's weights fingerprint when the caller took it before the base was wrapped or
    partitioned (the trainer); else it is taken from `model`'s base here. `family`: the base's model family name,
    recorded as `base.family` (load_adapter refuses the adapter on another family's base). An existing `out_dir` is
    replaced only if it is an adapter saved here before, or with `replace` (omnideft.files.atomic_path)."""
    out = Path(out_dir)
    # a crash never leaves a half-written adapter; the old one stays until then
    with atomic_path(out, writer="omnideft adapter", replace=replace) as tmp:
        spec = getattr(model, "omnideft_spec", None)
        if hasattr(model, "adapter_state_dict"):  # own injection (soda, svdiff)
            name, peft_type = "default", None
            tmp.mkdir(parents=True)
            tensors = {k: v for k, v in model.adapter_state_dict().items() if MLLM not in k}
            if state_dict is not None:  # e.g. the trainer's gathered copy, named like model.named_parameters()
                tensors = {k: state_dict.get(f"base_model.{k}", state_dict.get(k, v)) for k, v in tensors.items()}
            save_file({k: v.detach().contiguous() for k, v in tensors.items()}, tmp / "adapter_model.safetensors")
            _write_own_config(tmp, spec, model.method, model.targets)
        else:
            name = model.active_adapter if isinstance(model.active_adapter, str) else next(iter(model.peft_config))
            peft_state = state_dict if state_dict is not None else model.state_dict()
            if any(MLLM in k for k in peft_state):  # an adapted prompt encoder (the MLLM part) writes its own files
                peft_state = {k: v for k, v in peft_state.items() if MLLM not in k}
            elif state_dict is None:
                peft_state = None  # PEFT takes the adapter's own weights from the model
            model.save_pretrained(tmp, state_dict=peft_state, safe_serialization=True, selected_adapters=[name])
            if name != "default":  # PEFT nests non-default adapters in a sub-folder; the contract wants them at the top
                for f in (tmp / name).iterdir():
                    f.rename(tmp / f.name)
                (tmp / name).rmdir()
            peft_type = str(model.peft_config[name].peft_type.value)
            if spec is not None and not get_method(spec.method).peft_native(spec):
                targets = sorted(model.peft_config[name].target_modules)
                _write_own_config(tmp, spec, spec.method, targets)
                peft_type = None
        for label, tensors in (extra_tensors or {}).items():
            save_file({k: v.detach().contiguous() for k, v in tensors.items()}, tmp / f"{label}.safetensors")
        for module in model.get_base_model().modules():  # non-PEFT parts write their own files (camera encoder)
            save_files = getattr(module, "save_adapter_files", None)
            if callable(save_files):
                save_files(tmp, state_dict=state_dict)
        meta = {
            "format": FORMAT,
            "base": {"name": base_name, "fingerprint": base_fingerprint(model.get_base_model()),
                     "weights": base_weights if base_weights is not None
                     else weights_fingerprint(model.get_base_model()),
                     **({"family": family} if family else {})},
            "adapter_name": name,
            "method": spec.method if spec is not None else None,
            "peft_type": peft_type,
            "step": step,
            "recipe": recipe,
            "versions": {p: version(p) for p in ("omnideft", "peft", "diffusers", "torch")},
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            **(extra_meta or {}),
        }
        (tmp / "omnideft.json").write_text(json.dumps(meta, indent=2, default=str) + "\n")
    return out


def _write_own_config(folder: Path, spec, method: str, targets: list[str]) -> None:
    fields = dataclasses.asdict(spec) if spec is not None else {"method": method}
    fields.update(targets=list(targets), include_embedders=False)
    config = {"format": OWN_CONFIG, "omnideft_method": method, "spec": fields, "target_modules": list(targets)}
    (folder / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n")


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


def resolve_model_name(model: str | None, adapter: str | None) -> str:
    """--model, else the base the adapter names. A local base that has moved together with its run folder is
    found as `base/` beside the adapter (the fingerprint check in load_adapter still guards the match)."""
    if model:
        return model
    if adapter:
        name = read_adapter_meta(adapter).get("base", {}).get("name")
        if name:
            sibling = Path(adapter).resolve().parent / "base"
            looks_local = name.startswith((".", "/")) or Path(name).exists() or name.count("/") != 1
            if looks_local and not Path(name).exists() and (sibling / "transformer").is_dir():
                return str(sibling)
            return name
    raise UserError("--model is required (the adapter does not name its base model)")


def adapter_family(folder: str | Path) -> str | None:
    """The model family name the adapter records; None for an adapter written before families were recorded (the
    families registry says which family that means: family_of_adapter)."""
    return read_adapter_meta(folder).get("base", {}).get("family")


def read_adapter_config(folder: str | Path) -> dict:
    return read_json_config(Path(folder) / "adapter_config.json")


def read_json_config(path: Path, fmt: str | None = None) -> dict:
    """An adapter folder's JSON config (PEFT's, or a part's own: the camera encoder, an MLLM part); with `fmt`, its
    "format" field must be that. Anything else is one line naming the file."""
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"adapter {path} is not valid JSON: {exc}") from None
    if fmt is not None and config.get("format") != fmt:
        raise UserError(f"adapter {path}: format {config.get('format')!r}, expected {fmt!r}")
    return config


def read_extra_tensors(folder: str | Path, label: str) -> dict[str, torch.Tensor] | None:
    path = Path(folder) / f"{label}.safetensors"
    if not path.is_file():
        return None
    return read_finite_tensors(path)


def read_finite_tensors(path: Path) -> dict[str, torch.Tensor]:
    """A safetensors file of an adapter; unreadable or holding NaN/infinity is one line naming the file and
    tensor (an adapter of a run that diverged must never be applied: it renders noise)."""
    try:
        tensors = load_file(str(path))
    except Exception as exc:  # truncated or foreign file: safetensors raises its own error types
        raise UserError(f"cannot read {path}: {str(exc).splitlines()[0]}") from None
    if (bad := first_non_finite(tensors)) is not None:
        raise UserError(f"adapter {path} holds non-finite values (tensor {bad}); it cannot be used")
    return tensors


def first_non_finite(tensors: dict[str, torch.Tensor]) -> str | None:
    """The name of the first floating-point tensor holding NaN or infinity, or None."""
    for name in sorted(tensors):
        t = tensors[name]
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            return name
    return None


def check_base(folder: str | Path, transformer: nn.Module, meta: dict, family=None) -> None:
    """The adapter was trained on this base: the same model family (when the caller says which, `family`: its
    ModelFamily, whose check_adapter reads the record), same shapes (fingerprint) and same weights (weights
    fingerprint, which tolerates the rounding of bf16/fp16 loading)."""
    base = meta.get("base", {})
    if family is not None:
        family.check_adapter(folder, base)
    want, have = base.get("fingerprint"), base_fingerprint(transformer)
    if want and want != have:
        raise UserError(f"adapter {folder} was trained on a base of another shape "
                        f"({base.get('name')}, {want}); this model is {have}")
    if (bucket := weights_differ(base.get("weights"), weights_fingerprint(transformer))) is not None:
        raise UserError(f"adapter {folder} was trained on a base with other weights than this model "
                        f"({base.get('name')}; weights fingerprint differs at bucket {bucket}); load the base it "
                        "was trained on")


def load_adapter(transformer: nn.Module, folder: str | Path, adapter_name: str = "default",
                 is_trainable: bool = False, *, family=None) -> nn.Module:
    """Check the base (its family when the caller passes it, `family`: the base's ModelFamily; shapes and weights)
    and the tensors (readable, finite), then load: stock PEFT for PEFT
    folders (then every method's after_peft_load: DEFT layers use the fast forward), the method's own injection
    for omnideft configs. Whole or not at all: a tensor the model has no place for, or a place the file has no
    tensor for, is refused naming the first such key (PEFT alone would only warn and leave the layer at its
    initial value, i.e. silently render the base model's output)."""
    meta = read_adapter_meta(folder)
    check_base(folder, transformer, meta, family)
    tensors = read_finite_tensors(Path(folder) / "adapter_model.safetensors")
    config = read_adapter_config(folder)
    if "omnideft_method" in config:
        return _load_own(transformer, Path(folder), config, adapter_name, is_trainable, tensors)
    from peft import PeftModel, get_peft_model_state_dict

    try:
        model = PeftModel.from_pretrained(transformer, str(folder), adapter_name=adapter_name,
                                          is_trainable=is_trainable)
    except Exception as exc:  # safetensors/PEFT errors on truncated or mismatched files
        raise UserError(f"cannot load adapter {folder}: {str(exc).splitlines()[0]}") from None
    expected = set(get_peft_model_state_dict(model, adapter_name=adapter_name))
    if mismatch := _key_mismatch(expected, set(tensors)):
        model.unload()  # leave `transformer` as it was: nothing of this adapter stays injected
        raise UserError(f"cannot load adapter {folder}: {mismatch}")
    for method in all_methods():
        method.after_peft_load(model)
    return model


def _key_mismatch(expected: set, found: set) -> str:
    """'' when the file holds exactly the tensors the config promises, else the first offending key."""
    if unexpected := sorted(found - expected):
        return (f"tensor {unexpected[0]} has no place in the model ({len(unexpected)} unexpected; an adapter for "
                "other modules or another base)")
    if missing := sorted(expected - found):
        return f"tensor {missing[0]} is missing ({len(missing)} of {len(expected)} that the config promises)"
    return ""


def _load_own(transformer: nn.Module, folder: Path, config: dict, adapter_name: str, is_trainable: bool,
              tensors: dict):
    from omnideft.adapters.apply import apply_adapter

    known = {f.name for f in dataclasses.fields(AdapterSpec)}
    fields = {k: v for k, v in config.get("spec", {}).items() if k in known}
    fields.update(method=config["omnideft_method"], targets=config.get("target_modules", []), init="paper",
                  include_embedders=False)
    model = apply_adapter(transformer, AdapterSpec(**fields), adapter_name=adapter_name)
    try:
        if hasattr(model, "load_adapter_state_dict"):
            model.load_adapter_state_dict(tensors)
        else:
            from peft import get_peft_model_state_dict, set_peft_model_state_dict

            if mismatch := _key_mismatch(set(get_peft_model_state_dict(model, adapter_name=adapter_name)),
                                         set(tensors)):
                raise ValueError(mismatch)
            set_peft_model_state_dict(model, tensors, adapter_name=adapter_name)
    except (ValueError, RuntimeError, KeyError) as exc:
        raise UserError(f"cannot load adapter {folder}: {str(exc).splitlines()[0]}") from None
    if not is_trainable:
        for p in model.parameters():
            p.requires_grad_(False)
        model.eval()
    return model
