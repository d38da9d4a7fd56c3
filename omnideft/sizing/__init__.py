"""Sizing a training step without running it: a model's shapes (ModelShapes, counted on the meta device), the
set-up and workload of a step, the predicted memory by component (estimate.py) and its measurement on the CPU
(measure.py). The planner (plan/) and every family's plan entry (families/<name>/plan.py) share these types."""
