"""The forgetting gauge (retention recipe section): PEFT's drift, the probes, a shape-world run logging drift and
task scores at every validation, the max_drift limit keeping the last adapter within it, and bad input refused in
one line before the run folder is touched. Every family's run with the gauge (and its exact resume) is in the
conformance suite (tests/test_families.py); two DDP processes in tests/test_train.py."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from omnideft.eval.retention.drift import drift
from omnideft.eval.retention.probes import PROBES_PER_SET, load_probes
from omnideft.shapes.shards import write_task_shards
from tests.helpers import assert_one_line_error, run_cli_here


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return write_task_shards(tmp_path_factory.mktemp("shards"), ["fill"], n_samples=8, size=32, seed=0, shard_size=4,
                             n_examples=1)


def _args(shards, out, dinov2, *extra) -> list[str]:
    return ["train", "--no-progress", "model.name=tiny", f"data.shards=[{shards}]", "data.max_image_size=32",
            "adapter.method=lora", "adapter.rank=4", "train.batch_size=2", "train.lr=5e-2", "train.max_steps=5",
            "train.checkpoint_every=1", "train.keep_checkpoints=0", "validation.every=1", "validation.steps=2",
            "retention.enabled=true", "retention.probes=shapes", f"retention.dinov2_model={dinov2}",
            f"output.dir={out}", *extra]


def _retention_lines(out) -> dict[int, dict]:
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: {k: v for k, v in r.items() if k.startswith("retention/")} for r in rows}


def test_drift_is_pefts_formula():
    """(1 - mean cos) / 2 of L2-normalised embeddings: 0 for the same images, 1 for opposite ones."""
    e = torch.nn.functional.normalize(torch.randn(5, 16, generator=torch.Generator().manual_seed(0)), dim=-1)
    f = torch.nn.functional.normalize(torch.randn(5, 16, generator=torch.Generator().manual_seed(1)), dim=-1)
    assert drift(e, e) == pytest.approx(0.0, abs=1e-6)
    assert drift(e, -e) == pytest.approx(1.0, abs=1e-6)
    assert drift(e, f) == pytest.approx((1 - torch.nn.functional.cosine_similarity(e, f).mean().item()) / 2, abs=1e-6)


def test_shipped_probe_sets_are_the_shape_worlds_family_a_and_generic():
    from omnideft.shapes.tasks import TASKS

    shapes = load_probes("shapes", 32)
    assert len(shapes) == PROBES_PER_SET and all(p.target is not None and p.target.size == (32, 32) for p in shapes)
    assert all(len(p.images) == p.prompt.count("<|image_") for p in shapes)
    first_words = {p.prompt.split(". ")[-1].split()[0] for p in shapes}
    assert first_words >= {"draw", "fill", "mirror", "rotate", "paint"}  # several family-A tasks
    assert all(t.family == "A" for t in TASKS.values() if t.name in {"draw", "fill", "edges", "mirror", "rotate"})
    assert [p.prompt for p in load_probes("shapes", 32)] == [p.prompt for p in shapes]  # the same draw every time
    generic = load_probes("generic", 32)
    assert len(generic) == PROBES_PER_SET and all(p.target is None and not p.images for p in generic)


def test_shape_world_run_logs_drift_and_scores_and_the_limit_keeps_the_last_adapter_within_it(shards, metric_models,
                                                                                             tmp_path):
    dinov2 = metric_models["dinov2"]
    free = run_cli_here(*_args(shards, tmp_path / "free", dinov2))
    assert free.returncode == 0, free.stderr[-3000:]
    lines = _retention_lines(tmp_path / "free")
    assert sorted(lines) == [1, 2, 3, 4, 5]
    for step, numbers in lines.items():  # every validation: drift, task scores (the probes have targets), cost
        assert set(numbers) == {"retention/drift", "retention/iou", "retention/colour_error", "retention/seconds"}
        assert 0 <= numbers["retention/drift"] <= 1 and 0 <= numbers["retention/iou"] <= 1
        assert numbers["retention/seconds"] > 0
        assert (tmp_path / "free" / "retention" / f"step-{step:07d}.png").is_file()
    report = json.loads((tmp_path / "free" / "retention.json").read_text())
    assert [v["step"] for v in report["validations"]] == [1, 2, 3, 4, 5]
    assert report["source"]["repository"] == "huggingface/peft" and report["base"]["iou"] is not None
    assert len(report["validations"][0]["pairs"]) == PROBES_PER_SET
    assert (tmp_path / "free" / "retention.png").is_file()
    assert any((tmp_path / "free" / "tensorboard").iterdir())

    # the limit: the drift of the last validation before the first one that drifted further than all before it
    drifts = [lines[s]["retention/drift"] for s in sorted(lines)]
    over = next(j for j in range(1, len(drifts)) if drifts[j] > max(drifts[:j]))  # the adapter drifts: it learns
    limit = max(drifts[:over])
    kept_step = max(s for s in range(1, over + 1) if drifts[s - 1] <= limit)
    capped = run_cli_here(*_args(shards, tmp_path / "capped", dinov2, f"retention.max_drift={limit!r}"))
    assert capped.returncode == 0, capped.stderr[-3000:]
    message = [ln for ln in capped.stderr.splitlines() if ln.startswith("retention:")]
    assert len(message) == 1 and f"at step {over + 1} is over retention.max_drift" in message[0], capped.stderr
    assert f"the adapter is step {kept_step}'s" in message[0]
    summary = json.loads((tmp_path / "capped" / "summary.json").read_text())
    assert summary["steps"] == over + 1 and summary["adapter_step"] == kept_step
    assert sorted(_retention_lines(tmp_path / "capped")) == list(range(1, over + 2))  # the run ended there
    kept = load_file(tmp_path / "capped" / "adapter" / "adapter_model.safetensors")
    checkpoint = load_file(tmp_path / "capped" / "checkpoints" / f"step-{kept_step:07d}" / "adapter_model.safetensors")
    assert kept.keys() == checkpoint.keys() and all(torch.equal(kept[k], checkpoint[k]) for k in kept)
    assert json.loads((tmp_path / "capped" / "adapter" / "omnideft.json").read_text())["step"] == kept_step
    assert not (tmp_path / "capped" / "checkpoints" / f"step-{over + 1:07d}").exists()  # nothing over the limit kept
    report = json.loads((tmp_path / "capped" / "retention.json").read_text())
    assert report["stopped"]["adapter_step"] == kept_step and report["within_limit"]["step"] == kept_step


def test_without_dinov2_the_gauge_logs_task_scores_only(shards, tmp_path):
    """retention.dinov2_model: null (no DINOv2 at hand, as in the offline demo): IoU and colour error per validation,
    no drift anywhere."""
    proc = run_cli_here(*_args(shards, tmp_path, "null", "train.max_steps=2"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = _retention_lines(tmp_path)
    assert sorted(lines) == [1, 2]
    assert all(set(n) == {"retention/iou", "retention/colour_error", "retention/seconds"} for n in lines.values())
    report = json.loads((tmp_path / "retention.json").read_text())
    assert report["dinov2_model"] is None and all(v["drift"] is None for v in report["validations"])
    assert 0 <= report["validations"][-1]["iou"] <= 1 and (tmp_path / "retention.png").is_file()


def test_a_limit_no_validation_met_is_one_line(shards, metric_models, tmp_path):
    proc = run_cli_here(*_args(shards, tmp_path, metric_models["dinov2"], "train.max_steps=1",
                               "retention.max_drift=1e-12"))
    assert_one_line_error(proc, "over retention.max_drift", "no validation before it was within the limit")
    assert not (tmp_path / "adapter").exists()


def test_bad_input_is_one_line_before_anything_is_written(shards, metric_models, tmp_path):
    (tmp_path / "in.png").write_bytes(b"")
    from PIL import Image

    Image.new("RGB", (32, 32), "red").save(tmp_path / "in.png")
    one_image = tmp_path / "one_image.yaml"
    one_image.write_text("- {prompt: 'paint <img><|image_1|></img> blue', images: [in.png]}\n")
    unknown_key = tmp_path / "unknown.jsonl"
    unknown_key.write_text('{"prompt": "a cat", "seed": 3}\n')
    cases = {
        "missing probe file": (["retention.probes=nothing-here.yaml"], ["retention.probes", "nothing-here.yaml"]),
        "unknown probe key": ([f"retention.probes={unknown_key}"], ["unknown keys ['seed']"]),
        "too many images": ([f"retention.probes={one_image}", "model.family=toy"],
                            ["1 images in retention probe 0", "takes at most 0"]),
        "not a DINOv2": ([f"retention.dinov2_model={metric_models['dino']}"],
                         ["retention.dinov2_model", "expected dinov2"]),
        "not a model folder": ([f"retention.dinov2_model={tmp_path}"], ["retention.dinov2_model", "config.json"]),
        "limit 0": (["retention.max_drift=0"], ["retention.max_drift", "(0, 1]"]),
        "limit over 1": (["retention.max_drift=1.5"], ["retention.max_drift", "(0, 1]"]),
        "no seeds": (["retention.seeds=[]"], ["retention.seeds is empty"]),
        "no DINOv2, no targets": (["retention.dinov2_model=null", "retention.probes=generic"],
                                  ["retention.dinov2_model is null", "generic have no targets"]),
        "no DINOv2, a limit": (["retention.dinov2_model=null", "retention.max_drift=0.1"],
                               ["retention.max_drift needs the drift"]),
    }
    for name, (extra, needles) in cases.items():
        out = tmp_path / name.replace(" ", "_")
        proc = run_cli_here(*_args(shards, out, metric_models["dinov2"], *extra))
        assert_one_line_error(proc, *needles)
        assert not out.exists(), name
