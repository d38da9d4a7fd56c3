"""A procedural world of coloured shapes and the in-context image tasks defined on it.

The small pretrained OmniGen (`model.name=small`) learns family A of these tasks; the demo and the retention
benchmark teach it family B with adapters and measure both with exact shape masks (metrics.py). No downloads.
"""

from omnideft.shapes.metrics import colour_error, shape_iou, target_mask
from omnideft.shapes.scene import BACKGROUND, COLOURS, SHAPES, Scene, outline, render, sample_scene
from omnideft.shapes.tasks import FAMILIES, TASKS, VOCABULARY, ShapeSample, ShapeTask, make_sample, task_names

__all__ = ["BACKGROUND", "COLOURS", "SHAPES", "Scene", "outline", "render", "sample_scene", "FAMILIES", "TASKS",
           "VOCABULARY", "ShapeSample", "ShapeTask", "make_sample", "task_names", "colour_error", "shape_iou",
           "target_mask"]
