"""Builders and trainer meet at contract 1: shards built from real-format sources train the tiny model."""

import json

import pytest
from builder_sources import CELL

from data_builders.jsonl import main as build_jsonl
from data_builders.visualcloze import main as build_visualcloze
from omnideft.train.loop import train
from omnideft.train.recipe import load_recipe


def _train(shards, out, *extra):
    recipe = load_recipe(None, ["model.name=tiny", f"data.shards={json.dumps(shards)}",
                                f"data.max_image_size={CELL * 2}", "adapter.rank=4", "train.max_steps=4",
                                "train.batch_size=2", "train.checkpoint_every=0",
                                f"output.dir={out}", *extra])
    train(recipe, progress=False)
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return metrics, json.loads((out / "summary.json").read_text())


@pytest.mark.parametrize("layout", ["interleaved", "grid"])
def test_visualcloze_shards_train(graph200k_dir, tmp_path, layout):
    out = tmp_path / "vc"
    assert build_visualcloze(["--src", str(graph200k_dir), "--out", str(out), "--resolution", str(CELL),
                              "--max-samples", "12", "--layout", layout, "--no-progress"]) == 0
    metrics, summary = _train([str(out / "train")], tmp_path / "run")
    assert len(metrics) == 4 and all(m["loss"] > 0 for m in metrics)
    assert all(t.startswith("visualcloze/") for m in metrics for t in m["tasks"])
    assert summary["skipped_samples"] == {}  # everything the builder wrote, the trainer reads


def test_mixed_sources_with_weights(graph200k_dir, jsonl_source, tmp_path):
    vc, js = tmp_path / "vc", tmp_path / "js"
    assert build_visualcloze(["--src", str(graph200k_dir), "--out", str(vc), "--resolution", str(CELL),
                              "--max-samples", "8", "--no-progress"]) == 0
    assert build_jsonl(["--src", str(jsonl_source / "toy.jsonl"), "--images", str(jsonl_source / "images"),
                        "--out", str(js), "--no-progress"]) == 0
    shards = [{"path": str(vc / "train"), "weight": 3.0}, {"path": str(js / "train"), "weight": 1.0}]
    metrics, summary = _train(shards, tmp_path / "run", "train.max_steps=6")
    assert sum(summary["drawn_per_source"].values()) >= 12
    assert set(summary["drawn_per_source"]) == {str(vc / "train"), str(js / "train")}
