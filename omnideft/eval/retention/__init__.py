"""The forgetting gauge the trainer runs at every validation (`retention` recipe section, docs/training.md):
probes.py (what is asked), drift.py (PEFT's drift), gauge.py (the trainer's calls), report.py (grid and plot)."""

from omnideft.eval.retention.gauge import RetentionGauge

__all__ = ["RetentionGauge"]
