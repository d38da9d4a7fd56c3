"""What training, evaluation and sampling share: examples -> model inputs (batch.py), pixels <-> scaled latents
(vae.py) and OmniGen's rectified-flow objective (loss.py). Below train/, eval/ and generate/, above data/ and
prompts/."""
