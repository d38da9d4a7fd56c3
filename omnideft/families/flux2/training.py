"""The trainer's FLUX.2 [klein] backend (`model.family: flux2`, docs/flux2.md): what `setup` loads and builds for it,
and the loss of one step. The adapted module is diffusers' Flux2Transformer2DModel; the Qwen3 text encoder and the VAE
stay frozen beside it and encode through the pipeline's own functions (`_get_qwen3_prompt_embeds`,
`_encode_vae_image`: the posterior mode, so the encoders draw nothing); the loss draws its noise and timesteps from
the run's checkpointed generator, so a resumed run draws what an uninterrupted one would."""

from __future__ import annotations

import torch
from diffusers import FlowMatchEulerDiscreteScheduler, Flux2KleinPipeline

from omnideft.data.shards import Example
from omnideft.families.family import TrainingBackend
from omnideft.families.flux2.batch import Flux2Batch, Flux2BatchBuilder
from omnideft.families.flux2.loss import flow_matching_loss


class Flux2Training(TrainingBackend):
    def load(self, device):
        components = self.family.load(self.settings.model, seed=self.settings.model_seed,
                                      revision=self.settings.revision)
        components.vae.to(device)
        components.text_encoder.to(device)
        return components

    def batch_builder(self, components, *, latents=None, camera=None) -> TrainingBatches:
        settings = self.settings
        return TrainingBatches(Flux2BatchBuilder(settings.condition_dropout, settings.seed, settings.max_image_size))

    def loss(self, model, components, batch, noise, autocast):
        """Per-sample loss [B] of the adapted transformer; the frozen text encoder and VAE encode without gradients
        outside autocast, on the device `load` put them on; the transformer runs under `autocast()`."""
        latents, text, text_ids, refs, ref_ids = encode_batch(batch["flux2"], components)
        with autocast():
            return flow_matching_loss(model, latents, text, text_ids, refs, ref_ids, self.timesteps(components), noise)

    def timesteps(self, components):
        """The scheduler's training timesteps (a fresh scheduler's: generation's `set_timesteps` changes the loaded
        one's), made once."""
        if getattr(self, "_timesteps", None) is None:
            self._timesteps = FlowMatchEulerDiscreteScheduler.from_config(components.scheduler.config).timesteps
        return self._timesteps

    def load_adapter(self, components, folder):
        from omnideft.adapters import load_adapter

        return load_adapter(components.transformer, folder, family=self.family), None


def encode_batch(batch: Flux2Batch, components):
    """(target latents [B, C, h, w], text states, text ids, packed references [B, N, C] or None, their ids)."""
    device = components.vae.device
    pipe = components.pipeline()
    with torch.no_grad():
        text = Flux2KleinPipeline._get_qwen3_prompt_embeds(components.text_encoder, components.tokenizer,
                                                           batch.prompts, device=device)
        text_ids = Flux2KleinPipeline._prepare_text_ids(text).to(device)
        latents = pipe._encode_vae_image(batch.targets.to(device, components.vae.dtype), generator=None)
        if not batch.references:
            return latents, text, text_ids, None, None
        refs = [pipe._encode_vae_image(r.to(device, components.vae.dtype), generator=None) for r in batch.references]
        ids = Flux2KleinPipeline._prepare_image_ids([r[:1] for r in refs]).to(device)
        packed = torch.cat([Flux2KleinPipeline._pack_latents(r) for r in refs], dim=1)
    return latents, text, text_ids, packed, ids.expand(latents.shape[0], -1, -1)


class TrainingBatches:
    """The loader's `build` and `output_size` for klein: one bucket per token layout (batch.py), batches as
    {"flux2": Flux2Batch, "tasks": [...]}; the loss moves tensors to the device as it encodes them."""

    def __init__(self, builder: Flux2BatchBuilder):
        self.builder = builder

    def output_size(self, ex: Example) -> tuple:
        return self.builder.layout(ex)

    def __call__(self, examples: list[Example]) -> dict[str, object]:
        batch = self.builder(examples)
        return {"flux2": batch, "tasks": batch.tasks}
