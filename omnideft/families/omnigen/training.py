"""The trainer's OmniGen (v1) backend: the diffusers components, prompts through OmniGen's processor with `<cfg>`
condition dropout and the target camera (batch.py), latents from the VAE or a latent cache (data.latents), and the
rectified-flow loss (loss.py) with the transformer under the run's autocast. Every random draw (VAE posterior,
noise, t) comes from the generator handed in, in a fixed order: exact resume depends on it."""

from __future__ import annotations

from omnideft.families.family import TrainingBackend
from omnideft.families.omnigen.batch import BatchBuilder, to_device
from omnideft.families.omnigen.loss import rectified_flow_loss
from omnideft.flow.vae import encode_batch


class OmniGenTraining(TrainingBackend):
    def load(self, device):
        """Every part stays on the CPU: the trainer moves the VAE to `device` unless a latent cache replaces it."""
        return self.family.load(self.settings.model, revision=self.settings.revision, seed=self.settings.model_seed)

    def camera(self, components, spec, has_cameras):
        from omnideft.camera.conditioning import setup_camera

        return setup_camera(components.transformer, components.tokenizer, spec, has_cameras)

    def batch_builder(self, components, *, latents=None, camera=None) -> BatchBuilder:
        from omnideft.families.omnigen.processor import OmniGenProcessor

        settings = self.settings
        return BatchBuilder(OmniGenProcessor(components.tokenizer, max_image_size=settings.max_image_size),
                            settings.condition_dropout, settings.seed, camera=camera.prompt if camera else None,
                            latents=latents)

    def to_device(self, batch: dict, device) -> dict:
        return to_device(batch, device)

    def loss(self, model, components, batch, noise, autocast):
        # per image: the latents a cache (data.latents) reproduces bit for bit (flow/vae.py)
        x1, cond = encode_batch(components.vae, batch, noise, per_image=True)
        with autocast():
            return rectified_flow_loss(model, x1, cond, noise)

    def load_adapter(self, components, folder):
        from omnideft.adapters import load_adapter
        from omnideft.camera.conditioning import load_camera

        # before the adapter: it may grow the token table the adapter was saved with
        camera = load_camera(components.transformer, components.tokenizer, folder)
        return load_adapter(components.transformer, folder, family=self.family), camera

    def cache_latents(self, components, examples, out, shards, progress=None) -> dict:
        from omnideft.families.omnigen.processor import OmniGenProcessor
        from omnideft.flow.latents import write_cache

        processor = OmniGenProcessor(components.tokenizer, max_image_size=self.settings.max_image_size)
        return write_cache(examples, components.vae, processor, out, shards, progress=progress)
