"""`omnideft eval --pred DIR --ref DIR`: pairs by file name, every table written, resume after a failure, and bad
input as one line with exit code 2."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

from omnideft.cli import main
from omnideft.eval.metrics import METRICS
from tests.metric_models import metric_flags, save_clip


def noise(seed: int, size=(40, 32)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(20, 236, (size[1], size[0], 3), dtype=np.uint8))


def write_pairs(root, names, perturbed=()):
    pred, ref = root / "pred", root / "ref"
    pred.mkdir(parents=True)
    ref.mkdir(parents=True)
    for i, name in enumerate(names):
        path = ref / f"{name}.{'jpg' if i % 2 else 'png'}"  # matched by stem across extensions
        noise(i).save(path)
        img = Image.open(path).convert("RGB")  # what the reference decodes to (JPEG is lossy)
        out = Image.fromarray((np.asarray(img, np.int16) + 10).astype(np.uint8)) if name in perturbed else img
        out.save(pred / f"{name}.png")
    return pred, ref


def read_rows(path):
    with open(path, newline="") as f:
        return {row["name"]: row for row in csv.DictReader(f)}


def run(capsys, *args):
    code = main(list(args))
    return code, capsys.readouterr().err


def one_error(code, err, *needles):
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    for n in needles:
        assert n in lines[0], (n, lines[0])


def test_every_metric_on_folders_writes_csv_json_and_markdown(tmp_path, metric_models, capsys):
    names = ["a", "b", "c", "d"]
    pred, ref = write_pairs(tmp_path, names, perturbed={"c"})
    (tmp_path / "prompts.json").write_text(json.dumps({n: f"a red cup number {n}" for n in names}))
    out = tmp_path / "out"
    code, err = run(capsys, "eval", "--pred", str(pred), "--ref", str(ref), "--prompts", str(tmp_path / "prompts.json"),
                    "--metrics", ",".join(METRICS), "--out", str(out), *metric_flags(metric_models))
    assert code == 0, err
    rows = read_rows(out / "scores.csv")
    assert set(rows) == set(names)
    assert all(rows[n][m] for n in names for m in METRICS if METRICS[m].per_image)
    assert float(rows["a"]["rmse"]) == 0 and float(rows["b"]["clip_i"]) == pytest.approx(1, abs=1e-5)
    assert float(rows["c"]["rmse"]) == pytest.approx(10, abs=1e-9)
    summary = json.loads((out / "summary.json").read_text())
    stats = summary["groups"]["all"]
    assert stats["rmse"]["n"] == 4 and stats["fid"]["std"] is None and stats["fid"]["mean"] >= 0
    assert summary["command"].startswith("omnideft eval --pred") and "torchmetrics" in summary["versions"]
    assert summary["metrics"]["rmse"] == {"higher_is_better": False, "formula": METRICS["rmse"].summary}
    table = (out / "summary.md").read_text()
    assert "| all | 4 |" in table and "rmse ↓" in table and "clip_i ↑" in table


def test_partial_run_keeps_its_rows_and_resumes(tmp_path, capsys):
    names = ["a", "b", "c", "d"]
    pred, ref = write_pairs(tmp_path, names)
    good = (pred / "c.png").read_bytes()
    (pred / "c.png").write_bytes(b"not a png")
    out = tmp_path / "out"
    args = ["eval", "--pred", str(pred), "--ref", str(ref), "--out", str(out), "--batch-size", "1", "--no-progress",
            "--device", "cpu"]
    one_error(*run(capsys, *args, "--metrics", "rmse"), "c.png", "unreadable")
    partial = read_rows(out / "scores.csv")  # rows finished before the bad image are kept, the rest are empty
    assert [n for n in names if partial[n]["rmse"]] == ["a", "b"]
    rows = (out / "scores.csv").read_text().replace("a,all,0.0", "a,all,123.0")
    (out / "scores.csv").write_text(rows)  # a marker: a resumed run must not score row a again
    (pred / "c.png").write_bytes(good)
    assert run(capsys, *args, "--metrics", "rmse,psnr")[0] == 0
    rows = read_rows(out / "scores.csv")
    assert set(rows) == set(names) and rows["a"]["rmse"] == "123.0" and rows["d"]["rmse"] == "0.0"
    assert all(rows[n]["psnr"] == "inf" for n in names)  # a metric added later is scored for every row
    other = tmp_path / "other"
    other.mkdir()
    for n in names:
        noise(9).save(other / f"{n}.png")
    one_error(*run(capsys, *args[:4], str(other), *args[5:], "--metrics", "rmse"), "other inputs", "ref")


def test_bad_folder_inputs_are_one_line_errors(tmp_path, metric_models, capsys):
    pred, ref = write_pairs(tmp_path, ["a", "b"])
    out = str(tmp_path / "out")
    base = ["eval", "--pred", str(pred), "--ref", str(ref), "--out", out, *metric_flags(metric_models)]
    one_error(*run(capsys, *base, "--metrics", "rmse,nope"), "unknown metric 'nope'")
    one_error(*run(capsys, *base, "--metrics", "clip_t"), "--prompts FILE is needed by clip_t")
    noise(5).save(pred / "extra.png")
    one_error(*run(capsys, *base, "--metrics", "ssim"), "no match in --ref", "extra")
    (pred / "extra.png").unlink()
    noise(6).save(ref / "lonely.png")
    one_error(*run(capsys, *base, "--metrics", "ssim"), "no match in --pred", "lonely")
    (ref / "lonely.png").unlink()
    noise(7).save(pred / "a.jpg")
    one_error(*run(capsys, *base, "--metrics", "ssim"), "two images named a")
    (pred / "a.jpg").unlink()
    one_error(*run(capsys, "eval", "--pred", str(pred), "--out", out, "--metrics", "dino_v1"),
              "--ref DIR is needed by dino_v1")
    broken = save_clip(tmp_path / "clip")
    (broken / "model.safetensors").unlink()
    one_error(*run(capsys, *base, "--metrics", "clip_i", "--clip-model", str(broken)), "lacks model.safetensors")
    one_error(*run(capsys, "eval", "--out", out), "--pred DIR", "--model and --shards")
