"""The memory planner: predicted peak GPU memory of a training step by component, from a model's config alone
(estimate.py, shapes.py), the memory presets of the recipe's `train.memory` (presets.py), and the CPU measurement
the prediction is held to (measure.py). Below train/ and cli; above model/ and adapters/."""
