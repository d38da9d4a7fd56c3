"""Shard examples -> OmniGen2 training inputs: the instruction in OmniGen2's wording (instruction.py) inside
the chat template, the input images as reference latents, the output image as the target latent; and condition
dropout as the published training does it (an empty instruction under a shorter system prompt; the reference images
dropped too for half of those). Decisions are seeded by the example's place in the training order, so a resumed run
makes the same ones. Pixel budgets are the published training's: 1024^2 for the output, [1024^2, 1024^2, 768^2,
512^2] for inputs by their count (the last one beyond four)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import torch

from omnideft.data.shards import Example
from omnideft.families.omnigen2.instruction import omnigen2_instruction
from omnideft.families.omnigen2.model.latents import encode_latent, image_to_pixels
from omnideft.families.omnigen2.model.prompt import chat_prompt, encode_texts

DROPPED_SYSTEM_PROMPT = "You are a helpful assistant that generates images."
MAX_INPUT_PIXELS = (1024 * 1024, 1024 * 1024, 768 * 768, 512 * 512)


@dataclass
class OmniGen2Batch:
    prompts: list[str]  # chat-wrapped, ready for the tokenizer
    targets: list[torch.Tensor]  # [3, H, W] in [-1, 1]
    references: list[list[torch.Tensor]]  # per example, [3, h, w] each; empty when none (or dropped)
    tasks: list[str] = field(default_factory=list)


class OmniGen2BatchBuilder:
    def __init__(self, tokenizer, condition_dropout: float, seed: int, reference_dropout: float = 0.5,
                 max_output_pixels: int = 1024 * 1024, max_side: int = 2048):
        self.tokenizer = tokenizer
        self.condition_dropout, self.reference_dropout = condition_dropout, reference_dropout
        self.seed, self.max_output_pixels, self.max_side = seed, max_output_pixels, max_side

    def __call__(self, examples: list[Example]) -> OmniGen2Batch:
        batch = OmniGen2Batch([], [], [], [])
        for ex in examples:
            instruction = omnigen2_instruction(ex.instruction, len(ex.inputs), where=f"sample {ex.key}")
            rng = random.Random(f"og2-dropout-{self.seed}-{ex.order_id or ex.key}")
            drop_prompt = rng.random() < self.condition_dropout
            drop_refs = drop_prompt and rng.random() < self.reference_dropout
            batch.prompts.append(chat_prompt(self.tokenizer, "", DROPPED_SYSTEM_PROMPT) if drop_prompt
                                 else chat_prompt(self.tokenizer, instruction))
            budget = MAX_INPUT_PIXELS[min(len(ex.inputs), len(MAX_INPUT_PIXELS)) - 1] if ex.inputs else 0
            batch.references.append([] if drop_refs else
                                    [image_to_pixels(im, budget, self.max_side)[0] for im in ex.inputs])
            batch.targets.append(image_to_pixels(ex.output, self.max_output_pixels, self.max_side)[0])
            batch.tasks.append(ex.task)
        return batch


def encode_batch(batch: OmniGen2Batch, vae, mllm, tokenizer, generator: torch.Generator, device="cpu",
                 train_mllm: bool = False):
    """(target latents, text states, text mask, reference latents) for flow_matching_loss; the frozen VAE runs
    without gradients, the MLLM too unless `train_mllm` (its language layers carry an adapter); VAE posterior
    samples come from `generator`."""
    with torch.set_grad_enabled(train_mllm):
        text, mask = encode_texts(mllm, tokenizer, batch.prompts, device=device)
    with torch.no_grad():
        targets = [encode_latent(vae, x[None].to(device), generator)[0] for x in batch.targets]
        refs = [[encode_latent(vae, r[None].to(device), generator)[0] for r in rs] or None for rs in batch.references]
    return targets, text, mask, refs
