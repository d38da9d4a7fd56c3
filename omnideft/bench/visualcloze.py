"""`bench visualcloze`: every sample of a `build-visualcloze --split test` shard set, scored per task with the
metrics VisualCloze and the DEFT paper report for its family:

| what the query produces | metrics |
|---|---|
| a condition map (dense prediction, reverse tasks): edges/masks | binary_f1, rmse |
| a condition map: depth, normals, poses, segmentations | rmse |
| an image from canny / depth conditions (conditional generation families) | canny_f1 / depth_rmse, fid, ssim |
| an image from other conditions (conditional generation families) | fid, ssim |
| a restored image (restoration families) | ssim, psnr |
| an edited, stylised or subject image (editing, style, subject families) | clip_i, dino_v1, dino_v2 |

The query is the sample's instruction and inputs, generated at the target's size; controllability is measured
against the query's own condition image. Rows are grouped by the sample's `task`. The cell names are those of
data_builders/visualcloze_tasks.py (contract 1 records them in the sample json).
"""

from __future__ import annotations

from collections.abc import Iterator

from omnideft.bench.job import Job
from omnideft.bench.protocol import Protocol, shard_examples
from omnideft.errors import UserError

EDGE_CELLS = {"canny", "hed", "mlsd", "mask"}
MAP_CELLS = EDGE_CELLS | {"depth", "normal", "openpose", "sam2_mask", "uniformer"}
CONTROL_METRIC = {"canny": "canny_f1", "depth": "depth_rmse"}
CONDITIONAL_FAMILIES = ("conditional_generation", "style_transfer_with_condition")


def task_metrics(family: str, produced: str, conditions: list[str]) -> tuple[tuple[str, ...], str | None]:
    """(metrics, condition cell measured for controllability or None)."""
    if produced in MAP_CELLS:
        return (("binary_f1", "rmse") if produced in EDGE_CELLS else ("rmse",)), None
    if family.startswith(CONDITIONAL_FAMILIES):
        control = next((c for c in conditions if c in CONTROL_METRIC), None)
        return ((CONTROL_METRIC[control],) if control else ()) + ("fid", "ssim"), control
    if family.startswith("restoration"):
        return ("ssim", "psnr"), None
    return ("clip_i", "dino_v1", "dino_v2"), None


class VisualClozeProtocol(Protocol):
    name = "visualcloze"
    summary = "Graph200K test tasks (build-visualcloze --split test): per-task metrics of the VisualCloze/DEFT papers"
    metrics_override = False

    def jobs(self) -> Iterator[Job]:
        found = False
        for job_id, url, ex in shard_examples(self.inputs.shards):
            if not ex.task.startswith("visualcloze/"):
                continue
            found = True
            meta = ex.meta
            family = ex.task.split("/")[1]
            cells = meta.get("cells") or {}
            order, target = list(cells.get("order", [])), cells.get("target")
            if not order or target is None:
                raise UserError(f"sample {ex.key} in {url} has no cell record (rebuild with the current "
                                "build-visualcloze)")
            conditions = order[:target] + order[target + 1:]
            metrics, control = task_metrics(family, order[target], conditions)
            cond = None
            if control and meta.get("source", {}).get("layout", "interleaved") == "interleaved":
                # the query row's inputs are its conditions in display order, after the example rows' cells
                cond = ex.inputs[len(ex.inputs) - len(conditions) + conditions.index(control)]
            yield Job(id=job_id, group=ex.task, instruction=ex.instruction, metrics=metrics, inputs=ex.inputs,
                      size=ex.output.size, refs=[ex.output], ref_ids=[job_id], cond=cond)
        if not found:
            raise UserError(f"--shards {' '.join(self.inputs.shards)}: no visualcloze/* samples (build them with "
                            "build-visualcloze --split test)")
