"""The trainer's OmniGen2 backend (`model.family: omnigen2`, docs/omnigen2.md): what `setup` loads and builds for
it, and the loss of one step. Everything else - engines, optimizer, checkpoints and exact resume, logs, the data
order - is the trainer's, shared with OmniGen v1: the adapted module is the OmniGen2 transformer, the MLLM and the
VAE stay frozen beside it, and every random draw (VAE posterior, noise, t) comes from the run's checkpointed noise
generator, so a resumed run draws what an uninterrupted one would."""

from __future__ import annotations

from pathlib import Path

import torch

from omnideft.data.shards import Example
from omnideft.errors import UserError
from omnideft.families.omnigen2.mllm import attach_mllm_adapter
from omnideft.flow.omnigen2_batch import OmniGen2Batch, OmniGen2BatchBuilder, encode_batch
from omnideft.flow.omnigen2_loss import flow_matching_loss
from omnideft.model.omnigen2 import check_reference_images
from omnideft.model.omnigen2.folder import OmniGen2Components, load_omnigen2, save_omnigen2

BATCH_KEY = "omnigen2"  # the loader's batch dict carries the OmniGen2Batch under this key (and "tasks" beside it)


class OmniGen2Training:
    """Setup's OmniGen2 parts; the recipe's checks that need no model run in the constructor."""

    def __init__(self, recipe):
        for key, value in (("model.quantize", recipe.model.quantize), ("data.latents", recipe.data.latents)):
            if value:  # (train.memory presets may set them: docs/memory.md)
                raise UserError(f"{key}={value} is OmniGen (v1) only so far; leave it unset for model.family "
                                "omnigen2 (docs/omnigen2.md)")
        if recipe.camera.encoding not in ("auto", "none"):
            raise UserError(f"camera.encoding {recipe.camera.encoding!r}: camera conditioning is OmniGen (v1) only; "
                            "set camera.encoding: none for model.family omnigen2")
        for i, item in enumerate(recipe.validation.prompts):
            count = len(item.get("images", [])) if isinstance(item, dict) else 0
            check_reference_images(count, "images", f"validation.prompts[{i}]")
            if isinstance(item, dict) and "camera" in item:
                raise UserError(f"validation.prompts[{i}].camera: cameras are OmniGen (v1) only")
        self.recipe = recipe

    def load(self, device) -> OmniGen2Components:
        comps = load_omnigen2(self.recipe.model.name, seed=self.recipe.model.seed)
        comps.vae.to(device)
        comps.mllm.to(device)
        return comps

    @staticmethod
    def after_adapter(comps: OmniGen2Components, spec) -> None:
        """After the transformer's adapter: `adapter.mllm_targets` injects the same method into the MLLM's
        language layers (adapters/mllm.py), registered as the transformer's submodule `mllm_adapter`."""
        if spec.mllm_targets == "language":
            attach_mllm_adapter(comps.transformer, comps.mllm, spec)

    @staticmethod
    def save_base(comps: OmniGen2Components, folder: Path) -> None:
        save_omnigen2(comps, folder, overwrite=True)  # a run restarted before its first checkpoint saves it again

    def batch_builder(self, comps: OmniGen2Components) -> TrainingBatches:
        data = self.recipe.data
        return TrainingBatches(OmniGen2BatchBuilder(comps.tokenizer, data.condition_dropout, self.recipe.train.seed,
                                                    max_output_pixels=min(1024 * 1024, data.max_image_size ** 2),
                                                    max_side=data.max_image_size))


class TrainingBatches:
    """The loader's `build` and `size_of` for OmniGen2: one size bucket (the transformer takes targets and references
    of different sizes in one batch), batches as {"omnigen2": OmniGen2Batch, "tasks": [...]}, which the v1
    `to_device` passes through untouched (the step moves tensors as it encodes them)."""

    def __init__(self, builder: OmniGen2BatchBuilder):
        self.builder = builder

    @staticmethod
    def output_size(ex: Example) -> tuple:
        return ()

    def __call__(self, examples: list[Example]) -> dict:
        batch = self.builder(examples)
        return {BATCH_KEY: batch, "tasks": batch.tasks}


def omnigen2_loss(run, batch: OmniGen2Batch) -> torch.Tensor:
    """Per-sample flow-matching loss [B] of the run's adapted transformer (prepared by the engine); the frozen MLLM
    and VAE encode without gradients outside autocast (the MLLM with them when its language layers carry an adapter:
    adapter.mllm_targets), the transformer runs under the run's autocast."""
    comps, live = run.components, run.live
    targets, text, mask, refs = encode_batch(batch, comps.vae, comps.mllm, comps.tokenizer, live.noise,
                                             device=run.accelerator.device,
                                             train_mllm=run.recipe.adapter.mllm_targets != "none")
    with run.engine.autocast():
        return flow_matching_loss(live.model, targets, text, mask, refs, live.noise)
