"""`omnideft bench`: protocols on shards built by the builders from the tests' sources, on the tiny OmniGen with a
tiny adapter: every table, fixed seeds, resume, the comparison table and chart, and one-line errors."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

from data_builders.dreambooth import main as build_dreambooth
from data_builders.visualcloze import main as build_visualcloze
from omnideft.cli import main
from tests.builders import builder_sources
from tests.helpers import assert_one_line_error, run_cli
from tests.metric_models import metric_flags

graph200k_dir = builder_sources.graph200k_dir  # the builders' tiny Graph200K and DreamBooth sources (fixtures)
dreambooth_root = builder_sources.dreambooth_root

GEN = ["--model", "tiny", "--steps", "2", "--height", "32", "--width", "32"]
# two builds: conditional generation (controllability) and the other families; the test split has 4 rows
VC_TASKS = ("conditional_generation/canny,conditional_generation/depth",
            "dense_prediction/depth,dense_prediction/canny,restoration/contrast_up,image_editing/depthedit")


@pytest.fixture(scope="module")
def vc_shards(graph200k_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("vc_test")
    dirs = []
    for i, tasks in enumerate(VC_TASKS):
        out = root / f"build{i}"
        assert build_visualcloze(["--src", str(graph200k_dir), "--split", "test", "--out", str(out), "--resolution",
                                  "32", "--max-samples", "6", "--tasks", tasks, "--random-target-prob", "0",
                                  "--rows-probs", "1,1,0", "--seed", str(i), "--no-progress"]) == 0
        dirs.append(str(out / "test"))
    return dirs


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    """A DEFT adapter with random (non-identity) factors on the tiny base: it changes what the model generates."""
    import torch

    from omnideft.adapters import AdapterSpec, apply_adapter, save_adapter
    from omnideft.families.omnigen.model import load_omnigen
    from omnideft.families.omnigen.targets import target_modules as omnigen_targets

    torch.manual_seed(0)
    model = apply_adapter(load_omnigen("tiny").transformer, AdapterSpec(method="deft", rank=4, init="paper"),
                          targets=omnigen_targets)
    return save_adapter(model, tmp_path_factory.mktemp("adapter") / "deft_r4", base_name="tiny")


def bench(capsys, *args):
    code = main(["bench", *args])
    return code, capsys.readouterr().err


def rows(out):
    with open(out / "scores.csv", newline="") as f:
        return {r["name"]: r for r in csv.DictReader(f)}


def test_visualcloze_protocol_writes_every_table_resumes_and_compares(vc_shards, adapter, metric_models, tmp_path,
                                                                      capsys):
    shards = [a for d in vc_shards for a in ("--shards", d)]
    flags = metric_flags(metric_models)
    base, tuned = tmp_path / "base", tmp_path / "deft"
    assert bench(capsys, "visualcloze", *GEN, *shards, "--out", str(base), *flags)[0] == 0
    assert bench(capsys, "visualcloze", *GEN, "--adapter", str(adapter), *shards, "--out", str(tuned), *flags)[0] == 0

    summary = json.loads((base / "summary.json").read_text())
    groups = summary["groups"]
    expect = {"conditional_generation/canny": {"canny_f1", "fid", "ssim"},
              "conditional_generation/depth": {"depth_rmse", "fid", "ssim"},
              "dense_prediction/depth": {"rmse"}, "dense_prediction/canny": {"binary_f1", "rmse"},
              "restoration/contrast_up": {"ssim", "psnr"}, "image_editing/depthedit": {"clip_i", "dino_v1", "dino_v2"}}
    present = {g.removeprefix("visualcloze/"): set(m) for g, m in groups.items()}
    assert present and all(present[t] == expect[t] for t in present), present
    assert {"conditional_generation/canny", "conditional_generation/depth"} & set(present)
    table = rows(base)
    assert len(table) == sum(s["n"] for g in groups.values() for s in list(g.values())[:1])
    assert sorted(int(r["seed"]) for r in table.values()) == list(range(len(table)))  # seed = 0 + job index
    assert summary["seeds"]["rule"] == "seed + job index" and summary["label"] == "base"
    assert summary["command"].startswith("omnideft bench visualcloze --model tiny")
    assert "torch" in summary["versions"] and (base / "summary.md").read_text().count("| visualcloze/") == len(groups)
    assert len(list((base / "conds").glob("*.png"))) == sum(
        1 for r in table.values() if r["group"].startswith("visualcloze/conditional_generation"))

    # resume: only the missing image is generated again, and with its fixed seed it comes out identical
    images = sorted((base / "images").glob("*.png"))
    victim = images[len(images) // 2]
    before = np.asarray(Image.open(victim)).copy()
    stamps = {p: p.stat().st_mtime_ns for p in images if p != victim}
    victim.unlink()
    assert bench(capsys, "visualcloze", *GEN, *shards, "--out", str(base), *flags)[0] == 0
    assert np.array_equal(np.asarray(Image.open(victim)), before)
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())
    assert not np.array_equal(np.asarray(Image.open(tuned / "images" / victim.name)), before)  # the adapter acts

    code, err = bench(capsys, "visualcloze", *GEN, *shards, "--seed", "5", "--out", str(base), *flags)
    assert code == 2 and "differ: seed" in err

    cmp = tmp_path / "compare"
    assert bench(capsys, "--compare", str(base), str(tuned), "--out", str(cmp))[0] == 0
    md = (cmp / "compare.md").read_text()
    assert "| base |" in md and "| deft_r4 |" in md and "**" in md and "## visualcloze/" in md
    with open(cmp / "compare.csv", newline="") as f:
        compared = list(csv.DictReader(f))
    assert {r["run"] for r in compared} == {"base", "deft_r4"}
    for group, metric in {(r["group"], r["metric"]) for r in compared}:
        pair = [r for r in compared if (r["group"], r["metric"]) == (group, metric)]
        values = [float(r["mean"]) for r in pair]
        if len(pair) == 2 and not any(np.isnan(values)):
            higher = json.loads((base / "summary.json").read_text())["metrics"][metric]["higher_is_better"]
            winner = max(values) if higher else min(values)
            assert {r["run"] for r in pair if r["best"] == "True"} == {r["run"] for r in pair
                                                                       if float(r["mean"]) == winner}
    chart = Image.open(cmp / "compare.png")
    assert chart.width > 200 and len(np.unique(np.asarray(chart).reshape(-1, 3), axis=0)) > 3


def test_subject_and_retention_protocols(dreambooth_root, metric_models, tmp_path, capsys):
    flags = metric_flags(metric_models)
    subjects = []
    for subject in ("dog6", "backpack"):
        out = tmp_path / subject
        assert build_dreambooth(["--src", str(dreambooth_root), "--subject", subject, "--split", "test", "--out",
                                 str(out), "--resolution", "32", "--no-progress"]) == 0
        subjects += ["--shards", str(out / "test")]
    sub = tmp_path / "subject"
    assert bench(capsys, "subject", *GEN, *subjects, "--images-per-prompt", "2", "--out", str(sub), *flags)[0] == 0
    groups = json.loads((sub / "summary.json").read_text())["groups"]
    assert set(groups) == {"dog6", "backpack"}
    assert all(set(g) == {"clip_i", "clip_t", "dino_v1", "dino_v2"} for g in groups.values())
    assert groups["dog6"]["clip_i"]["n"] == 3 * 2  # live-subject prompts x images per prompt
    assert len(list((sub / "refs" / "dog6").glob("*.png"))) == 3  # dog6 has 3 readable images

    ret = tmp_path / "retention"
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("# two prompts\na red cup\na blue dog on the beach\n")
    code, _ = bench(capsys, "retention", *GEN, "--prompts", str(prompts), "--metrics", "clip_t,sharpness",
                    "--out", str(ret), *flags)
    assert code == 0
    table = rows(ret)
    assert set(table) == {"prompt_000_0", "prompt_001_0"} and all(r["clip_t"] and r["sharpness"] for r in
                                                                   table.values())

    code, err = bench(capsys, "subject", *GEN, "--shards", str(ret), "--out", str(tmp_path / "x"), *flags)
    assert code == 2 and "error:" in err
    code, err = bench(capsys, "retention", *GEN, "--metrics", "clip_i", "--out", str(tmp_path / "y"), *flags)
    assert code == 2 and "no reference images" in err
    code, err = bench(capsys, "retention", *GEN, *subjects[:2], "--out", str(tmp_path / "y"), *flags)
    assert code == 2 and "reads no shards" in err
    code, err = bench(capsys, "--compare", str(sub), str(ret), "--out", str(tmp_path / "z"))
    assert code == 2 and "different protocols" in err
    code, err = bench(capsys, "--compare", str(sub), "--out", str(tmp_path / "z"))
    assert code == 2 and "at least two run folders" in err


def test_unknown_protocol_from_the_command_line(tmp_path):
    assert_one_line_error(run_cli("bench", "nope", "--model", "tiny", "--out", str(tmp_path / "o")),
                          "unknown protocol 'nope'; known: visualcloze, subject, retention")
