"""OmniGen2 (Qwen2.5-VL prompt encoder + Lumina2-style diffusion transformer + 16-channel VAE): omnideft's own
transformer, the tiny preset, the published folder layout and the flow-matching schedulers. Light to import: the
modules below load torch and diffusers."""

from omnideft.errors import UserError

MAX_REFERENCE_IMAGES = 5  # rows of the published transformer's image_index_embedding


def check_reference_images(count: int, what: str = "reference images", where: str = "") -> None:
    """The one check of OmniGen2's image limit (the transformer, the sampler, shard instructions, the generator and
    the trainer's validation prompts call it): beyond five images, a UserError naming `where` and `what`."""
    if count > MAX_REFERENCE_IMAGES:
        raise UserError(f"{where + ': ' if where else ''}{count} {what}; OmniGen2 takes at most {MAX_REFERENCE_IMAGES}")
