"""The demo on the shipped small base (a short run: the full one is README command 1), and `omnideft eval` on what
it wrote."""

import json

import pytest
from PIL import Image

from tests.helpers import run_cli


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "out"
    proc = run_cli("demo", "--out", str(out), "--steps", "30", "--samples", "48", "--queries", "2",
                   "--retention-queries", "1", "--no-progress")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc


def test_demo_writes_its_report_pictures_and_adapter(demo_run):
    out, proc = demo_run
    for f in ("report.md", "report.json", "loss.png", "samples.png", "kept.png", "retention.png", "metrics.jsonl"):
        assert (out / f).is_file(), f
    assert (out / "adapter" / "adapter_model.safetensors").is_file() and not (out / "base").exists()
    r = json.loads((out / "report.json").read_text())
    assert r["base_model"] == "small" and r["steps"] == 30
    assert r["heldout_queries"] == 2 * len(r["new_tasks"]) and r["retention_queries"] == len(r["known_tasks"])
    for table in (r["iou"], r["retention"]["iou"]):
        assert set(table) == {"base", "adapted"} and all(0.0 <= v <= 1.0 for v in table.values())
    assert set(r["new_tasks"]).isdisjoint(r["known_tasks"])
    # 30 steps already fit the new task better than the base on unseen samples (same noise and timesteps)
    assert r["heldout_denoising_loss"]["adapted"] < r["heldout_denoising_loss"]["base"], r
    md = (out / "report.md").read_text()
    assert f"{r['iou']['base']:.3f} | {r['iou']['adapted']:.3f}" in md  # the mean row of the new tasks
    assert Image.open(out / "samples.png").height >= 96 * r["heldout_queries"]  # a row per query (two per task)
    assert "new tasks: IoU" in proc.stdout
    # the right answers counted per row of samples.png, by the rule the report states
    rows = r["right_rows"]
    assert rows["rows"] == r["heldout_queries"] and 0 <= rows["base"] <= rows["rows"]
    assert rows["rule"] == "IoU >= 0.7 and colour error <= 40" and rows["rule"] in md
    assert f"right answers {rows['base']} -> {rows['adapted']} of {rows['rows']}" in proc.stdout
    # the forgetting gauge ran on both methods (every steps/4 and at the end), from the base's answers at step 0
    gauges = r["gauge"]["validations"]
    assert list(gauges) == ["DEFT", "LoRA"]
    for history in gauges.values():
        assert [v["step"] for v in history] == [0, 7, 14, 21, 28, 30]
        assert history[0]["iou"] == gauges["DEFT"][0]["iou"]  # the same base, probes and noise
        assert all(0 <= v["iou"] <= 1 and v["drift"] is None for v in history)
    assert (out / "compare" / "lora" / "adapter" / "adapter_model.safetensors").is_file()


def test_eval_tables_from_demo_run(demo_run, tmp_path):
    out, _ = demo_run
    proc = run_cli("eval", "--model", "small", "--adapter", str(out / "adapter"), "--shards",
                   str(out / "heldout_b" / "train"), "--out", str(tmp_path / "ev"), "--samples", "8",
                   "--max-image-size", "64")
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads((tmp_path / "ev.json").read_text())["results"]
    assert set(res) == {"base", str(out / "adapter")}
    assert res[str(out / "adapter")]["all"] < res["base"]["all"]
    assert (tmp_path / "ev.csv").read_text().startswith("model,shapes/b/")
    assert "| base |" in (tmp_path / "ev.md").read_text()


def test_answer_folders_rescore_to_the_report(demo_run, tmp_path):
    """`omnideft eval` on the demo's answers/ reads each target's mask and colour from the image alone, and must
    agree with the report, which scored with the known shape and colour."""
    out, _ = demo_run
    r = json.loads((out / "report.json").read_text())
    names = sorted(p.name for p in (out / "answers" / "target").iterdir())
    assert len(names) == r["heldout_queries"]
    assert sorted(p.name for p in (out / "answers" / "deft").iterdir()) == names
    for model, key in (("base", "base"), ("deft", "adapted")):
        proc = run_cli("eval", "--pred", str(out / "answers" / model), "--ref", str(out / "answers" / "target"),
                       "--metrics", "shape_iou,colour_error", "--out", str(tmp_path / model))
        assert proc.returncode == 0, proc.stderr[-2000:]
        stats = next(iter(json.loads((tmp_path / model / "summary.json").read_text())["groups"].values()))
        assert stats["shape_iou"]["mean"] == pytest.approx(r["iou"][key], abs=1e-6)
        assert stats["colour_error"]["mean"] == pytest.approx(r["colour_error"][key], abs=1e-3)
