"""Run logs on the main process: metrics.jsonl (one line per step), TensorBoard scalars and validation grids,
optionally Weights & Biases. A resumed run drops the lines of steps after its checkpoint, so the log reads as one
uninterrupted run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image
from torch.utils.tensorboard import SummaryWriter

from omnideft.errors import UserError


class RunLog:
    def __init__(self, out: Path, enabled: bool, start_step: int, tensorboard: bool, wandb_project: str | None,
                 config: dict):
        self.enabled = enabled
        self.tb = self.wandb = None
        self.metrics = None
        if not enabled:
            return
        path = out / "metrics.jsonl"
        kept = []
        if start_step and path.is_file():
            kept = [ln for ln in path.read_text().splitlines() if ln and json.loads(ln)["step"] <= start_step]
        self.metrics = path.open("w")
        self.metrics.writelines(ln + "\n" for ln in kept)
        if tensorboard:
            self.tb = SummaryWriter(str(out / "tensorboard"), purge_step=start_step + 1 if start_step else None)
        if wandb_project:
            try:
                import wandb  # optional package: only runs that set output.wandb_project need it
            except ImportError:
                raise UserError("output.wandb_project is set but the `wandb` package is not installed") from None
            self.wandb = wandb.init(project=wandb_project, config=config, dir=str(out), resume="allow")

    def step(self, record: dict) -> None:
        if not self.enabled:
            return
        self.metrics.write(json.dumps(record) + "\n")
        self.metrics.flush()
        step = record["step"]
        scalars = {k: v for k, v in record.items() if isinstance(v, (int, float)) and k != "step" and v is not None}
        scalars.update({f"task_loss/{t}": v for t, v in record.get("task_loss", {}).items()})
        if self.tb:
            for k, v in scalars.items():
                self.tb.add_scalar(k if "/" in k else f"train/{k}", v, step)
        if self.wandb:
            self.wandb.log(scalars, step=step)

    def image(self, tag: str, path: Path, step: int) -> None:
        if not self.enabled:
            return
        if self.tb:
            self.tb.add_image(tag, np.asarray(Image.open(path).convert("RGB")), step, dataformats="HWC")
        if self.wandb:
            import wandb  # present: __init__ imported it

            self.wandb.log({tag: wandb.Image(str(path))}, step=step)

    def close(self) -> None:
        """Idempotent: the loop closes the log when it ends, whichever way it ends."""
        if self.metrics:
            self.metrics.close()
            self.metrics = None
        if self.tb:
            self.tb.close()
            self.tb = None
        if self.wandb:
            self.wandb.finish()
            self.wandb = None
