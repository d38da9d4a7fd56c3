"""Training: the recipe (contract 3), setup, the step and the loop, checkpoints and exact resume, engines, logs."""
