"""What an output folder was made from: OUT/run.json records the inputs (and per metric its settings) of the run that
made it, so a rerun resumes into the folder only with the same ones. Shared by the verbs that resume into a folder
(bench and eval scores, generate's batch jobs)."""

from __future__ import annotations

import json
from pathlib import Path

from omnideft.errors import UserError
from omnideft.files import write_text_atomic

RECORD = "run.json"


def claim_output(out_dir: Path, inputs: dict, metric_settings: dict[str, dict], what: str,
                 remedy: str = "use another --out") -> None:
    """Resume only into a folder made from the same inputs: OUT/run.json records them and, per metric scored so
    far, the settings it used (model, weights, thresholds). Other inputs (refused naming them and `remedy`), or a
    metric asked again with other settings, are refused, so outputs of two different runs never mix. New metrics
    are added."""
    path = Path(out_dir) / RECORD
    state = {"inputs": inputs, "metrics": {}}
    if path.is_file():
        try:
            state = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            state = None
        if not (isinstance(state, dict) and isinstance(state.get("inputs"), dict)
                and isinstance(state.get("metrics"), dict)):
            raise UserError(f"{path} is damaged; remove it (and what was made next to it) to start over")
    inputs = json.loads(json.dumps(inputs))  # tuples -> lists, as they read back
    differ = sorted(k for k in set(state["inputs"]) | set(inputs) if state["inputs"].get(k) != inputs.get(k))
    if differ:
        values = "; ".join(f"{k} {state['inputs'].get(k)!r} there, {inputs.get(k)!r} now" for k in differ)
        raise UserError(f"{out_dir} holds {what} of other inputs (differ: {values}); {remedy}")
    for metric, settings in json.loads(json.dumps(metric_settings)).items():
        old = state["metrics"].setdefault(metric, settings)
        changed = sorted(k for k in settings if old.get(k) != settings[k])
        if changed:
            raise UserError(f"{out_dir} has {metric} scored with other {', '.join(changed)} "
                            f"({', '.join(str(old.get(k)) for k in changed)}); use those or another --out")
    write_text_atomic(path, json.dumps(state, indent=2) + "\n")
