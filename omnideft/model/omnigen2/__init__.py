"""OmniGen2 (Qwen2.5-VL prompt encoder + Lumina2-style diffusion transformer + 16-channel VAE): omnideft's own
transformer, the tiny preset, the published folder layout and the flow-matching schedulers. Light to import: the
modules below load torch and diffusers."""

MAX_REFERENCE_IMAGES = 5  # rows of the published transformer's image_index_embedding
