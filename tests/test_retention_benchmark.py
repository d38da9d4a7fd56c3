"""benchmarks/retention.py end to end at smoke size: every method trains and is scored, the tables, the plot and the
last-line JSON are written (the real run is ~35 minutes; its numbers are in docs/models.md and the issue note)."""

import json
import subprocess
import sys

from PIL import Image

from tests.helpers import REPO


def test_retention_benchmark_quick_run_writes_its_table_plot_and_json(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "retention.py"), str(tmp_path / "r"), "--quick"],
                          capture_output=True, text=True, cwd=REPO, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(summary) == {"lora", "deft_relu", "deft_qr", "para", "base"}
    assert all(0.0 <= summary[m]["fit_B"] <= 1.0 and 0.0 <= summary[m]["retain_A"] <= 1.0 for m in summary)
    report = json.loads((tmp_path / "r" / "retention.json").read_text())
    assert report["long_steps"] == 4 * report["short_steps"]
    assert set(report["common_lr"]) == set(report["best_lr"]) == {"lora", "deft_relu", "deft_qr", "para"}
    assert "LoRA" in report["verdict"] and "| deft_qr |" in proc.stdout
    assert Image.open(tmp_path / "r" / "retention.png").size == (900, 380)
