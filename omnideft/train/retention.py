"""The forgetting gauge in the loop (the gauge itself is eval/retention/gauge.py, handed to `train` like
`validate`): measure at every validation, keep the adapter of the last validation within retention.max_drift, and
end the run when a validation goes over the limit (train/loop.py `finish` then publishes the kept adapter).

Under DDP the main process renders and scores; under ZeRO-3 every rank renders (the forward gathers sharded weights
collectively) and only the main process scores. The main process's record is then broadcast, so every rank takes
the same decision and meets the same collectives (the adapter's gather): no rank waits on one that left.
"""

from __future__ import annotations

import sys
from pathlib import Path

from accelerate.utils import broadcast_object_list

from omnideft.errors import UserError
from omnideft.train.checkpoint import adapter_state, save_adapter_folder

LOGGED = ("drift", "iou", "colour_error", "seconds")


def measure_retention(run, gauge) -> dict:
    """All ranks, at a validation step: the gauge's numbers for the step's metrics line (`retention/<name>`); keeps
    the adapter when the drift is within the limit, sets `run.drift_stop` when it is over."""
    acc, step = run.accelerator, run.step
    main = acc.is_main_process
    record = None
    if run.engine.zero_stage == 3 or main:
        record = gauge.measure(run.live.adapted, run.components, step, run.out, write=main)
    if main:
        record["kept"] = gauge.kept
        run.log.image("retention", Path(record["grid"]), step)
    if acc.num_processes > 1:
        record = broadcast_object_list([record])[0]
    limit = gauge.max_drift
    if limit is not None and record["drift"] <= limit:
        state = adapter_state(run.live)  # every rank: ZeRO-3 gathers the partitions
        if main:
            save_adapter_folder(run.live, gauge.kept_folder(run.out), step, state)
            gauge.keep(step, record["drift"], run.out)
    elif limit is not None:
        if main:
            gauge.stop(record, run.out)
        kept = record["kept"]
        if kept is None:
            raise UserError(f"retention: drift {record['drift']:.4f} at step {step} is over retention.max_drift "
                            f"{limit:g} and no validation before it was within the limit; no adapter was saved "
                            "(lower train.lr, validate more often with validation.every, or raise the limit)")
        run.drift_stop = {"step": step, "drift": record["drift"], "max_drift": limit,
                          "adapter_step": kept["step"], "adapter_drift": kept["drift"]}
        if main:
            print(f"retention: drift {record['drift']:.4f} at step {step} is over retention.max_drift {limit:g}; "
                  f"stopped, the adapter is step {kept['step']}'s (drift {kept['drift']:.4f})", file=sys.stderr)
    acc.wait_for_everyone()
    return {f"retention/{k}": record[k] for k in LOGGED if record.get(k) is not None}
