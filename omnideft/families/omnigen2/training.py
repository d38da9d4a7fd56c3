"""The trainer's OmniGen2 backend (`model.family: omnigen2`, docs/omnigen2.md): what `setup` loads and builds for
it, and the loss of one step. Everything else - engines, optimizer, checkpoints and exact resume, logs, the data
order - is the trainer's, shared with OmniGen v1: the adapted module is the OmniGen2 transformer, the MLLM and the
VAE stay frozen beside it, and every random draw (VAE posterior, noise, t) comes from the run's checkpointed noise
generator, so a resumed run draws what an uninterrupted one would."""

from __future__ import annotations

from omnideft.data.shards import Example
from omnideft.families.family import TrainingBackend
from omnideft.families.omnigen2.batch import OmniGen2BatchBuilder, encode_batch
from omnideft.families.omnigen2.loss import flow_matching_loss


class OmniGen2Training(TrainingBackend):
    def load(self, device):
        comps = self.family.load(self.settings.model, seed=self.settings.model_seed)
        comps.vae.to(device)
        comps.mllm.to(device)
        return comps

    def after_adapter(self, components, spec) -> None:
        """After the transformer's adapter: `adapter.mllm_targets` injects the same method into the MLLM's
        language layers (families/omnigen2/mllm.py), registered as the transformer's submodule `mllm_adapter`."""
        from omnideft.families.omnigen2.mllm import attach_mllm_adapter

        if spec.mllm_targets == "language":
            attach_mllm_adapter(components.transformer, components.mllm, spec)

    def batch_builder(self, components, *, latents=None, camera=None) -> TrainingBatches:
        settings = self.settings
        return TrainingBatches(OmniGen2BatchBuilder(components.tokenizer, settings.condition_dropout, settings.seed,
                                                    max_output_pixels=min(1024 * 1024, settings.max_image_size ** 2),
                                                    max_side=settings.max_image_size))

    def loss(self, model, components, batch, noise, autocast):
        """Per-sample flow-matching loss [B] of the adapted transformer; the frozen MLLM and VAE encode without
        gradients outside autocast (the MLLM with them when its language layers carry an adapter:
        adapter.mllm_targets), on the device `load` put them on; the transformer runs under `autocast()`."""
        targets, text, mask, refs = encode_batch(batch["omnigen2"], components.vae, components.mllm,
                                                 components.tokenizer, noise, device=components.vae.device,
                                                 train_mllm=self.settings.mllm_targets != "none")
        with autocast():
            return flow_matching_loss(model, targets, text, mask, refs, noise)

    def load_adapter(self, components, folder):
        from omnideft.adapters import load_adapter
        from omnideft.families.omnigen2.mllm import has_mllm_adapter, load_mllm_adapter

        model = load_adapter(components.transformer, folder, family=self.family)
        if has_mllm_adapter(folder):  # adapter.mllm_targets: its MLLM part, on the MLLM the loss encodes with
            load_mllm_adapter(components.mllm, folder)
        return model, None


class TrainingBatches:
    """The loader's `build` and `size_of` for OmniGen2: one size bucket (the transformer takes targets and references
    of different sizes in one batch), batches as {"omnigen2": OmniGen2Batch, "tasks": [...]}; the loss moves tensors
    to the device as it encodes them."""

    def __init__(self, builder: OmniGen2BatchBuilder):
        self.builder = builder

    @staticmethod
    def output_size(ex: Example) -> tuple:
        return ()

    def __call__(self, examples: list[Example]) -> dict[str, object]:
        batch = self.builder(examples)
        return {"omnigen2": batch, "tasks": batch.tasks}
