"""Examples -> model inputs: prompt encoding with `<cfg>` condition dropout, the target camera (as `<cam>` + a
[B, 11] `camera` tensor, or as text), collation; and moving a batch to the device. Latents: flow/vae.py."""

from __future__ import annotations

import random

import torch

from omnideft.camera.prompt import CameraPrompt
from omnideft.camera.record import VECTOR_SIZE, record_vector
from omnideft.data.shards import Example
from omnideft.prompts import CFG_PROMPT, OmniGenProcessor, collate_prompts, crop_image


class BatchBuilder:
    def __init__(self, processor: OmniGenProcessor, condition_dropout: float, seed: int, pad_token_id: int = 2,
                 camera: CameraPrompt | None = None):
        self.processor = processor
        self.camera = camera  # None: camera records are ignored
        self.condition_dropout = condition_dropout
        self.seed = seed
        self.pad_token_id = pad_token_id

    def output_size(self, ex: Example) -> tuple[int, int]:
        w, h = crop_image(ex.output, self.processor.max_image_size).size
        return h, w

    def __call__(self, examples: list[Example]) -> dict:
        prompts, cameras = [], []
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
        hw = self.output_size(examples[0])
        batch = collate_prompts(prompts, hw, self.pad_token_id)
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
    return out
