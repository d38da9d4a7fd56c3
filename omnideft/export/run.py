"""`omnideft export`: load the adapter on its base (the family the base folder or the adapter's record says), then
write it in the asked format (adapters/export.py) — merged into a model folder, with the parts of the adapter beyond
the transformer (family.merge_adapter_extras, e.g. an MLLM prompt encoder's part), or as LoRA files."""

from __future__ import annotations

from pathlib import Path

from safetensors import safe_open

from omnideft.adapters.export import (
    adapter_deltas,
    as_lora,
    export_lora,
    export_metadata,
    is_export,
    lora_files,
    merge_deltas,
    unload,
)
from omnideft.adapters.folder import adapter_family, load_adapter, read_adapter_config, read_adapter_meta
from omnideft.adapters.spec import AdapterSpec
from omnideft.errors import UserError
from omnideft.families.registry import all_export_formats, resolve_family
from omnideft.files import atomic_path, check_output_folder

MERGED_WRITER = "omnideft export --format merged"  # recorded in the folder: a rerun may replace its own output


def run_export(adapter: str, fmt: str, base: str, out: str, rank: int | None = None) -> str:
    """`omnideft export`: returns the report: a line with the modules written and their exactness (or the
    truncation error), then one line per file written naming the programs it is for."""
    if fmt not in all_export_formats():
        raise UserError(f"--format {fmt!r} is not one of {list(all_export_formats())}")
    check_export_out(Path(out), Path(adapter), base, merged=fmt == "merged")
    meta = read_adapter_meta(adapter)
    family = resolve_family(base, recorded=adapter_family(adapter))
    clients = family.check_export_format(fmt)  # the family's declaration, before anything loads
    if fmt != "merged":
        check_lora_files(Path(out), lora_files(fmt, family))
    comps, save, layout = family.load(base), family.save, family.layout
    model = load_adapter(comps.transformer, adapter, family=family)
    deltas = adapter_deltas(model)
    transformer = unload(model)
    out_path = Path(out)
    extras = family.adapter_extras(adapter)  # e.g. adapter.mllm_targets: an MLLM part
    if fmt == "merged":
        merge_deltas(transformer, [(1.0, deltas)])
        comps.transformer = transformer  # the same module, adapter layers removed and deltas folded in
        folded = ["folded into the transformer", family.merge_adapter_extras(comps, adapter) if extras else ""]
        with atomic_path(out_path, writer=MERGED_WRITER) as tmp:
            save(comps, tmp)
        return (f"merged: {out_path} ({len(deltas)} modules {'; '.join(filter(None, folded))}; {layout})\n"
                f"{client_lines([out_path], clients)}")
    config = read_adapter_config(adapter)
    rank = rank or config.get("spec", {}).get("rank") or config.get("r") or AdapterSpec.rank
    factors, err = as_lora(deltas, rank)
    files = export_lora(factors, fmt, out_path, transformer, export_metadata(meta, fmt, str(adapter)), family=family)
    dense = sum(not isinstance(d, tuple) for d in deltas.values())
    how = (f"best rank-{rank} approximation of {dense} full-rank deltas, max relative error {err:.3e}" if dense
           else "exact LoRA form")
    skipped = f"; {extras} is not in this format, use --format merged" if extras else ""
    # what the file holds (a family's keys may fuse several adapted layers into one module)
    return f"{fmt}: {file_modules(files[0])} modules ({how}){skipped}\n{client_lines(files, clients)}"


def client_lines(files: list[Path], clients) -> str:
    """One line per file written: the programs it is for (the family's export_formats)."""
    for_whom = "; ".join(f"{c.name}: {c.call}" for c in clients)
    return "\n".join(f"  {f}  for {for_whom}" for f in files)


def file_modules(weights: Path) -> int:
    """The modules a written LoRA file holds: its down (A) matrices."""
    with safe_open(str(weights), "pt") as f:
        return sum(k.endswith((".lora_A.weight", ".lora_down.weight")) for k in f.keys())


def check_export_out(out: Path, adapter: Path, base: str, merged: bool) -> None:
    """Before anything loads: `--out` may not be the adapter's folder or lie inside it (nor the base's), however it
    is spelled (relative, through a symlink); a merged folder, which replaces `--out` whole, may not hold them
    either. Then the folder rules of every output (omnideft.files.check_output_folder)."""
    target = out.resolve()
    sources = [("adapter", adapter.resolve())]
    if Path(base).exists():  # a local base folder; hub ids and 'tiny' are not on disk
        sources.append(("base model", Path(base).resolve()))
    for what, folder in sources:
        if target == folder or folder in target.parents:
            raise UserError(f"--out {out} is inside the {what} folder {folder}; an input is never an output - name "
                            "another folder")
        if merged and target in folder.parents:
            raise UserError(f"--out {out} holds the {what} folder {folder}; a merged export replaces --out whole - "
                            "name another folder")
    # merged replaces --out whole: only an empty folder or an earlier merged export; LoRA files go in beside the rest
    check_output_folder(out, MERGED_WRITER, replace=not merged)


def check_lora_files(out: Path, names: list[str]) -> None:
    """LoRA files go into --out beside what it holds; a file they would replace must be an earlier export (its
    metadata says so), never e.g. another adapter's adapter_model.safetensors and adapter_config.json."""
    weights = out / names[0]
    ours = is_export(weights) if weights.exists() else not any((out / n).exists() for n in names[1:])
    if not ours:
        raise UserError(f"--out {out} holds {' / '.join(n for n in names if (out / n).exists())} that export did "
                        "not write (another adapter?); name another folder - nothing in it was changed")
