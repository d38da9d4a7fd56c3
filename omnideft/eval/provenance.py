"""What a score table was made with (command line, library versions, device, time), and the identity check that
lets a run resume only into its own output folder."""

from __future__ import annotations

import json
import platform
import shlex
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

PACKAGES = ("omnideft", "torch", "transformers", "diffusers", "peft", "torchmetrics", "opencv-python-headless",
            "numpy", "pillow")


def library_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in PACKAGES:
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def command_line(argv: list[str] | None) -> str:
    return shlex.join(["omnideft", *(sys.argv[1:] if argv is None else argv)])


def provenance(argv: list[str] | None, device: str) -> dict:
    return {"command": command_line(argv), "versions": library_versions(), "device": device,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def claim_output(out_dir: Path, inputs: dict, metric_settings: dict[str, dict], what: str) -> None:
    """Resume only into a folder made from the same inputs: OUT/run.json records them and, per metric scored so
    far, the settings it used (model, weights, thresholds). Other inputs, or a metric asked again with other
    settings, are refused naming the difference, so rows of two different runs never mix. New metrics are added."""
    from omnideft.errors import UserError
    from omnideft.files import write_text_atomic

    path = Path(out_dir) / "run.json"
    state = {"inputs": inputs, "metrics": {}}
    if path.is_file():
        try:
            state = json.loads(path.read_text())
        except json.JSONDecodeError:
            raise UserError(f"{path} is damaged; remove it (and the scores next to it) to start over") from None
    inputs = json.loads(json.dumps(inputs))  # tuples -> lists, as they read back
    differ = sorted(k for k in set(state["inputs"]) | set(inputs) if state["inputs"].get(k) != inputs.get(k))
    if differ:
        raise UserError(f"{out_dir} holds {what} of other inputs (differ: {', '.join(differ)}); use another --out")
    for metric, settings in json.loads(json.dumps(metric_settings)).items():
        old = state["metrics"].setdefault(metric, settings)
        changed = sorted(k for k in settings if old.get(k) != settings[k])
        if changed:
            raise UserError(f"{out_dir} has {metric} scored with other {', '.join(changed)} "
                            f"({', '.join(str(old.get(k)) for k in changed)}); use those or another --out")
    write_text_atomic(path, json.dumps(state, indent=2) + "\n")
