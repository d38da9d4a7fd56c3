"""What training, evaluation and sampling of every family share: pixels <-> scaled latents (vae.py) and the latent
cache (latents.py). Each family's batches and loss live in its folder (families/<name>/). Below families/, above
data/ and prompts/."""
