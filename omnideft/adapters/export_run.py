"""`omnideft export`: load the adapter on its base (OmniGen or OmniGen2), then write it in the asked format
(adapters/export.py) — merged into a model folder, its MLLM part too (adapters/mllm.py), or as LoRA files."""

from __future__ import annotations

from functools import partial
from pathlib import Path

from omnideft.adapters.export import (
    FORMATS,
    adapter_deltas,
    as_lora,
    export_lora,
    export_metadata,
    merge_deltas,
    unload,
)
from omnideft.adapters.mllm import has_mllm_adapter, merge_mllm_adapters
from omnideft.adapters.spec import AdapterSpec
from omnideft.errors import UserError
from omnideft.files import atomic_path


def run_export(adapter: str, fmt: str, base: str, out: str, rank: int | None = None) -> str:
    """`omnideft export`: returns a one-line report (files, exactness or the truncation error)."""
    from omnideft.adapters.folder import adapter_family, load_adapter, read_adapter_config, read_adapter_meta
    from omnideft.model import load_omnigen, save_base
    from omnideft.model.family import resolve_family

    if fmt not in FORMATS:
        raise UserError(f"--format {fmt!r} is not one of {list(FORMATS)}")
    meta = read_adapter_meta(adapter)
    if resolve_family(base, recorded=adapter_family(adapter)) == "omnigen2":
        from omnideft.model.omnigen2.folder import load_omnigen2, save_omnigen2

        comps, save, layout = load_omnigen2(base), partial(save_omnigen2, overwrite=True), "OmniGen2 published layout"
    else:
        comps, save, layout = load_omnigen(base), save_base, "diffusers layout"
    model = load_adapter(comps.transformer, adapter)
    deltas = adapter_deltas(model)
    transformer = unload(model)
    out_path = Path(out)
    mllm_part = has_mllm_adapter(adapter)  # adapter.mllm_targets: an adapter on OmniGen2's MLLM too
    if fmt == "merged":
        merge_deltas(transformer, [(1.0, deltas)])
        comps.transformer = transformer  # the same module, adapter layers removed and deltas folded in
        mllm_note = ""
        if mllm_part:
            comps.mllm = merge_mllm_adapters(comps.mllm, [(str(adapter), 1.0)])
            mllm_note = "; its MLLM part folded into the MLLM"
        with atomic_path(out_path) as tmp:
            save(comps, tmp)
        return f"merged: {out_path} ({len(deltas)} modules folded into the transformer{mllm_note}; {layout})"
    config = read_adapter_config(adapter)
    rank = rank or config.get("spec", {}).get("rank") or config.get("r") or AdapterSpec.rank
    factors, err = as_lora(deltas, rank)
    files = export_lora(factors, fmt, out_path, transformer, export_metadata(meta, fmt, str(adapter)))
    dense = sum(not isinstance(d, tuple) for d in deltas.values())
    how = (f"best rank-{rank} approximation of {dense} full-rank deltas, max relative error {err:.3e}" if dense
           else "exact LoRA form")
    skipped = "; the MLLM part (mllm_adapter.*) is not in this format, use --format merged" if mllm_part else ""
    return f"{fmt}: {', '.join(str(f) for f in files)} ({len(factors)} modules; {how}){skipped}"
