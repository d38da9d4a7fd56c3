"""Evaluation: image metrics (`metrics/`, one file each + registry), folder scoring and score tables (`folders`,
`scoring`, `summary`), and `denoising` = held-out rectified-flow loss per task, base vs adapters."""
