"""`omnideft eval --pred DIR --ref DIR`: score a folder of predictions against references matched by file name.

Pairs are matched by file stem (`cat.png` ↔ `cat.jpg`); a prediction without a reference, a reference without a
prediction, or two files with one stem are refused with the names. `--cond DIR` gives condition images (edge or depth
maps) for canny_f1 / depth_rmse, `--prompts FILE` a JSON object {stem: prompt} for clip_t. Outputs in OUT/:
scores.csv (per image, resumable), summary.json and summary.md.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from omnideft.errors import UserError
from omnideft.eval.metrics import MetricOptions, metric_class
from omnideft.eval.provenance import claim_output, provenance
from omnideft.eval.scoring import ScoreItem, ScoreTable, score_items
from omnideft.eval.summary import write_summary

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}  # read by omnideft.images


def images_by_stem(folder: str | None, flag: str) -> dict[str, Path]:
    path = Path(folder or "")
    if not folder or not path.is_dir():
        raise UserError(f"{flag} {folder}: not a folder")
    found: dict[str, Path] = {}
    for p in sorted(path.iterdir()):
        if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file():
            if p.stem in found:
                raise UserError(f"{flag} {folder}: two images named {p.stem} ({found[p.stem].name}, {p.name})")
            found[p.stem] = p
    if not found:
        raise UserError(f"{flag} {folder}: no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return found


def _unmatched(names: set[str], where: str, flag: str) -> None:
    if names:
        shown = ", ".join(sorted(names)[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        raise UserError(f"{len(names)} image(s) have no match in {flag} {where}: {shown}")


def read_prompts(path: str) -> dict[str, str]:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"--prompts {path}: file not found")
    try:
        data = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"--prompts {path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise UserError(f"--prompts {path}: expected a JSON object {{image stem: prompt}}")
    return {Path(k).stem: v for k, v in data.items()}


def folder_items(pred: str, ref: str | None, cond: str | None, prompts: str | None,
                 metrics: list[str]) -> list[ScoreItem]:
    needs = {n for m in metrics for n in metric_class(m).needs}
    preds = images_by_stem(pred, "--pred")
    refs = cond_map = prompt_map = None
    if "ref" in needs or ("cond" in needs and not cond) or ref:
        if not ref:
            users = [m for m in metrics if {"ref", "cond"} & set(metric_class(m).needs)]
            raise UserError(f"--ref DIR is needed by {', '.join(users)}")
        refs = images_by_stem(ref, "--ref")
        _unmatched(set(preds) - set(refs), ref, "--ref")
        _unmatched(set(refs) - set(preds), pred, "--pred")
    if cond:
        cond_map = images_by_stem(cond, "--cond")
        _unmatched(set(preds) - set(cond_map), cond, "--cond")
    if prompts:
        prompt_map = read_prompts(prompts)
    elif "prompt" in needs:
        users = [m for m in metrics if "prompt" in metric_class(m).needs]
        raise UserError(f"--prompts FILE is needed by {', '.join(users)}")
    if prompt_map is not None and "prompt" in needs:
        _unmatched(set(preds) - set(prompt_map), prompts, "--prompts")
    return [ScoreItem(name=stem, pred=path, refs=(refs[stem],) if refs else (),
                      prompt=prompt_map.get(stem) if prompt_map else None,
                      cond=cond_map[stem] if cond_map else None) for stem, path in preds.items()]


def run_folder_eval(pred: str, ref: str | None, metrics: list[str], out: str, options: MetricOptions,
                    cond: str | None = None, prompts: str | None = None, argv: list[str] | None = None,
                    progress: bool = False) -> list[Path]:
    items = folder_items(pred, ref, cond, prompts, metrics)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    inputs = {"pred": str(Path(pred).resolve()), "ref": str(Path(ref).resolve()) if ref else None,
              "cond": str(Path(cond).resolve()) if cond else None,
              "prompts": str(Path(prompts).resolve()) if prompts else None}
    claim_output(out_dir, inputs, {m: metric_class(m).settings_of(options) for m in metrics}, "scores")
    table = ScoreTable(out_dir / "scores.csv")
    set_values = score_items(items, metrics, options, table, progress=progress)
    info = {"kind": "folders", "label": Path(pred).name, **provenance(argv, options.device),
            "inputs": {"pred": pred, "ref": ref, "cond": cond, "prompts": prompts}, "options": options_record(options)}
    return [out_dir / "scores.csv", *write_summary(out_dir, table, set_values, info, f"scores of {pred}",
                                                    {it.name for it in items})]


def options_record(options: MetricOptions) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(options).items()}
