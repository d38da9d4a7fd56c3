"""benchmarks/retention.py end to end at smoke size: every method (OFT too) trains with and without replay and is
scored, drift included with a tiny DINOv2; the tables, the plot and the last-line JSON are written. A folder that
is not DINOv2 is one line and exit 2 before anything is trained or written."""

import json
import subprocess
import sys

from PIL import Image

from tests.helpers import REPO
from tests.metric_models import save_dinov2

SCRIPT = str(REPO / "benchmarks" / "retention.py")
METHODS = {"lora", "deft_relu", "deft_qr", "para", "oft"}


def test_retention_benchmark_quick_run_writes_its_tables_drift_plot_and_json(tmp_path):
    dinov2 = save_dinov2(tmp_path / "dinov2")
    proc = subprocess.run([sys.executable, SCRIPT, str(tmp_path / "r"), "--quick", "--dinov2-model", str(dinov2)],
                          capture_output=True, text=True, cwd=REPO, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(summary) == METHODS | {"base"}
    for method in METHODS:
        row = summary[method]
        assert all(0.0 <= row[k] <= 1.0 for k in ("fit_B", "retain_A", "fit_B_replay", "retain_A_replay"))
        assert 0.0 <= row["retain_A_drift"] <= 1.0 and 0.0 <= row["retain_A_drift_replay"] <= 1.0
    assert summary["para"]["retain_A_drift"] > 0.0  # PaRa moves the base's answers at its first step
    report = json.loads((tmp_path / "r" / "retention.json").read_text())
    assert report["long_steps"] == 4 * report["short_steps"]
    assert report["drift"]["dinov2_model"] == str(dinov2) and f"DINOv2 from {dinov2}" in proc.stdout
    assert report["base"]["kept_drift"] == 0.0
    for label in ("no_replay", "replay"):
        runs = report["results"][label]
        assert set(runs["common_lr"]) == set(runs["best_lr"]) == METHODS
        assert "LoRA" in report["verdict"][label]
    assert "with replay (0.25" in proc.stdout and "no replay" in proc.stdout
    assert proc.stdout.count("| oft | 0.002 | common_lr |") == 4  # two lengths x two replay settings
    assert proc.stdout.count("A drift |") == 2
    assert Image.open(tmp_path / "r" / "retention.png").size == (900, 380)


def test_retention_benchmark_rejects_a_dinov2_folder_that_is_not_one(tmp_path):
    (tmp_path / "empty").mkdir()
    proc = subprocess.run([sys.executable, SCRIPT, str(tmp_path / "r"), "--quick", "--dinov2-model",
                           str(tmp_path / "empty")], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: --dinov2-model ")
    assert not (tmp_path / "r").exists()
