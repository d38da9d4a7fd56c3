"""Adapters as plain LoRA factors, merges and composition.

Every adapted layer has an exact form for its base weight W, given by its method (AdapterMethod.layer_delta):
LoRA factors (B, A) with delta W = B A (e.g. LoRA: B = lora_B alpha/r, A = lora_A; DEFT: B = Q_P,
A = s R - right^T W), or a dense delta W' - W (e.g. SODA), exported merged or as its best rank-r approximation
(truncated SVD) with the relative Frobenius error reported. An adapted layer that no method owns, or that its method
cannot express, stops the export naming the layer and the method.
From these: `export_lora` writes PEFT / diffusers / ComfyUI / kohya files (ComfyUI and kohya name the modules the
model family's way: family.lora_keys) and a family's own PEFT-layout formats (`family.peft_layout_formats`: PEFT's
folder keyed by the family's module names, for a tool that loads its original model class with PeftModel),
`merge_deltas` folds weighted deltas of several adapters into the base (exact composition, zero inference overhead).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from omnideft.adapters.portable_peft import write_lora_config
from omnideft.adapters.registry import all_methods
from omnideft.errors import UserError
from omnideft.files import atomic_path

EXPORT_FORMAT = "omnideft.export/1"  # in every exported LoRA file's metadata

LORA_FORMATS = ("peft-lora", "diffusers", "comfyui", "kohya")  # a family's own PEFT-layout formats come on top


def adapter_deltas(model: nn.Module) -> dict[str, tuple[torch.Tensor, torch.Tensor] | torch.Tensor]:
    """Module name (in the base transformer) -> (B, A) with delta W = B A, or a dense delta W (fp32), for every
    adapted layer (a module with a `base_layer`); UserError naming the layer when its method cannot say."""
    methods = all_methods()
    out = {}
    with torch.no_grad():
        for name, layer in model.get_base_model().named_modules():
            if not isinstance(getattr(layer, "base_layer", None), nn.Module):
                continue
            owners = [m for m in methods if m.owns(layer)]
            if len(owners) != 1:
                kind = f"{type(layer).__module__}.{type(layer).__qualname__}"
                raise UserError(f"adapted layer {name} ({kind}) belongs to "
                                f"{' and '.join(m.name for m in owners) or 'no registered adapter method'}; "
                                "its weight change cannot be exported or composed")
            try:
                out[name] = owners[0].layer_delta(layer)
            except UserError as exc:
                raise UserError(f"adapted layer {name} (method {owners[0].name}) cannot be exported or composed: "
                                f"{exc}") from None
    return out


def low_rank(delta: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Best rank-r factors of a dense delta (Eckart-Young) and the relative Frobenius error."""
    u, s, vh = torch.linalg.svd(delta, full_matrices=False)
    b, a = u[:, :rank] * s[:rank], vh[:rank]
    err = float(s[rank:].norm() / s.norm().clamp_min(1e-30))
    return b, a, err


def as_lora(deltas: dict, rank: int) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], float]:
    """All deltas as (B, A); dense ones truncated to `rank`. Returns the factors and the worst relative error."""
    out, worst = {}, 0.0
    for name, d in deltas.items():
        if isinstance(d, tuple):
            out[name] = d
        else:
            b, a, err = low_rank(d, rank)
            out[name] = (b, a)
            worst = max(worst, err)
    return out, worst


def merge_deltas(transformer: nn.Module, weighted: list[tuple[float, dict]]) -> None:
    """W <- W + sum_i w_i delta_i in place; every delta must be taken on the same, unmerged base."""
    modules = dict(transformer.named_modules())
    with torch.no_grad():
        for weight, deltas in weighted:
            for name, d in deltas.items():
                lin = modules[name]
                full = d[0] @ d[1] if isinstance(d, tuple) else d
                lin.weight += (weight * full).to(lin.weight.dtype)


def export_lora(factors: dict[str, tuple[torch.Tensor, torch.Tensor]], fmt: str, out: str | Path,
                transformer: nn.Module, metadata: dict[str, str], *, family) -> list[Path]:
    """Write LoRA factors (scale 1: alpha = rank) in one of LORA_FORMATS or of `family.peft_layout_formats`; returns
    the files written. `family`: the base's ModelFamily (its `name` names the file, its `lora_keys` the modules of
    the ComfyUI, kohya and its PEFT-layout formats)."""
    out = Path(out)
    meta = {k: str(v) for k, v in metadata.items()}
    if fmt not in LORA_FORMATS and fmt not in family.peft_layout_formats:
        raise UserError(f"--format {fmt!r}: {family.title} has no LoRA file layout of that name")
    out.mkdir(parents=True, exist_ok=True)
    if is_peft_layout(fmt, family):  # peft-lora: the diffusers module names; a family's format: its own names
        keyed = factors if fmt == "peft-lora" else family.lora_keys(fmt, factors, transformer)
        weights, config = (out / name for name in lora_files(fmt, family))
        _save(_lora_tensors(keyed, "base_model.model."), weights, meta)
        write_lora_config(config, {n: b.shape[1] for n, (b, _) in keyed.items()}, metadata.get("base"))
        return [weights, config]
    if fmt == "diffusers":
        tensors = _lora_tensors(factors, "transformer.")
        path = out / lora_files(fmt, family)[0]
        _save(tensors, path, meta)
        return [path]
    tensors = {}
    for key, (b, a) in family.lora_keys(fmt, factors, transformer).items():
        rank = torch.tensor(float(b.shape[1]))
        if fmt == "comfyui":
            tensors.update({f"{key}.lora_A.weight": a, f"{key}.lora_B.weight": b, f"{key}.alpha": rank})
        else:  # kohya
            key = "lora_unet_" + key.replace(".", "_")
            tensors.update({f"{key}.lora_down.weight": a, f"{key}.lora_up.weight": b, f"{key}.alpha": rank})
    path = out / lora_files(fmt, family)[0]
    _save(tensors, path, meta)
    return [path]


def is_peft_layout(fmt: str, family) -> bool:
    return fmt == "peft-lora" or fmt in family.peft_layout_formats


def lora_files(fmt: str, family) -> list[str]:
    """The files export_lora writes into its folder for `fmt` on a base of `family`: the weights first (PEFT
    layouts: then their config)."""
    if is_peft_layout(fmt, family):
        return ["adapter_model.safetensors", "adapter_config.json"]
    if fmt == "diffusers":
        return ["pytorch_lora_weights.safetensors"]
    return [f"{family.name}_lora_{fmt}.safetensors"]


def is_export(path: Path) -> bool:
    """Was this safetensors file written by export_lora (its metadata says so)?"""
    try:
        with safe_open(str(path), "pt") as f:
            return (f.metadata() or {}).get("format") == EXPORT_FORMAT
    except Exception:  # not a safetensors file at all
        return False


def _save(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    with atomic_path(path) as tmp:
        save_file({k: v.detach().float().contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)


def export_metadata(meta: dict, fmt: str, source: str) -> dict[str, str]:
    base = meta.get("base", {})
    return {"format": EXPORT_FORMAT, "export_format": fmt, "source_adapter": source,
            "base": str(base.get("name")), "base_fingerprint": str(base.get("fingerprint")),
            "method": str(meta.get("method") or meta.get("peft_type")), "step": str(meta.get("step")),
            "recipe": json.dumps(meta.get("recipe"), default=str)}


def unload(model: nn.Module) -> nn.Module:
    """Remove the adapter layers without merging; returns the plain transformer."""
    base = model.unload()
    if hasattr(base, "peft_config"):
        del base.peft_config
    return base


def _lora_tensors(factors: dict, prefix: str) -> dict:
    """PEFT / diffusers key layout: `<prefix><module>.lora_A.weight` (A) and `.lora_B.weight` (B)."""
    tensors = {}
    for n, (b, a) in factors.items():
        tensors[f"{prefix}{n}.lora_A.weight"] = a
        tensors[f"{prefix}{n}.lora_B.weight"] = b
    return tensors
