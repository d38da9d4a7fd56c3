"""Examples -> model inputs: prompt encoding with `<cfg>` condition dropout, the target camera (as `<cam>` + a
[B, 11] `camera` tensor, or as text), collation; and moving a batch to the device. Latents: flow/vae.py."""

from __future__ import annotations

import random

import torch

from omnideft.camera.prompt import CameraPrompt
from omnideft.camera.record import VECTOR_SIZE, record_vector
from omnideft.data.format.schema import tag_numbers
from omnideft.data.shards import Example
from omnideft.families.omnigen.collate import collate_prompts
from omnideft.families.omnigen.processor import CFG_PROMPT, OmniGenProcessor, crop_image
from omnideft.flow.latents import LatentCache


class BatchBuilder:
    def __init__(self, processor: OmniGenProcessor, condition_dropout: float, seed: int, pad_token_id: int = 2,
                 camera: CameraPrompt | None = None, latents: LatentCache | None = None):
        self.processor = processor
        self.latents = latents  # None: the step encodes pixels; else the batch carries cached posteriors
        self.camera = camera  # None: camera records are ignored
        self.condition_dropout = condition_dropout
        self.seed = seed
        self.pad_token_id = pad_token_id

    def output_size(self, ex: Example) -> tuple[int, int]:
        w, h = crop_image(ex.output, self.processor.max_image_size).size
        return h, w

    def __call__(self, examples: list[Example]) -> dict:
        prompts, cameras, input_digests = [], [], []
        for ex in examples:
            vector = record_vector(ex.camera) if self.camera and ex.camera else None
            cameras.append(vector or [0.0] * VECTOR_SIZE)  # rows without `<cam>` ignore their camera
            # Seeded by the example's place in the training order: the same decision after a resume.
            if random.Random(f"cfg-dropout-{self.seed}-{ex.order_id or ex.key}").random() < self.condition_dropout:
                # OmniGen drops text and image conditions together; the model learns the unconditional velocity.
                prompts.append(self.processor.encode(CFG_PROMPT))
            else:
                instruction = self.camera.instruction(ex.instruction, vector) if vector else ex.instruction
                prompts.append(self.processor.encode(instruction, ex.inputs))
                if self.latents is not None:  # one posterior per tag occurrence, as collate lists the pixels
                    input_digests += [(ex, ex.digests[k - 1]) for k in tag_numbers(instruction)]
        hw = self.output_size(examples[0])
        batch = collate_prompts(prompts, hw, self.pad_token_id)
        if self.latents is not None:
            outputs = [self.latents.posterior(ex.digests[-1], ex.key) for ex in examples]
            batch["output_posterior"] = (torch.cat([m for m, _ in outputs]), torch.cat([s for _, s in outputs]))
            batch["input_posteriors"] = [self.latents.posterior(d, ex.key) for ex, d in input_digests]
            del batch["input_pixel_values"]  # nothing to encode
        else:
            batch["output_pixels"] = torch.stack([self.processor.process_image(ex.output) for ex in examples])
        batch["tasks"] = [ex.task for ex in examples]
        if self.camera and self.camera.encoding == "learned":
            batch["camera"] = torch.tensor(cameras, dtype=torch.float32)
        return batch


def to_device(batch: dict, device) -> dict:
    out = dict(batch)
    for k in ("input_ids", "attention_mask", "position_ids", "output_pixels", "camera"):
        if k in batch:
            out[k] = batch[k].to(device)
    if "output_posterior" in batch:
        out["output_posterior"] = tuple(t.to(device) for t in batch["output_posterior"])
        out["input_posteriors"] = [(m.to(device), s.to(device)) for m, s in batch["input_posteriors"]]
    return out
