"""Evaluation: metrics and reports. `denoising` = held-out rectified-flow loss per task, base vs adapters."""
