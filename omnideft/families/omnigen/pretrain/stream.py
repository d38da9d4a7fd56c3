"""An endless, seeded stream of pretraining batches drawn from the shape-world tasks.

Each sample: a task drawn uniformly from the recipe's list, 0..max_examples in-context pairs, and the condition
dropout that gives guidance something to subtract — everything dropped (`<cfg>` or OmniGen's default negative
prompt, half each, so the sampler's default negative row means "unconditional" to this model) or only the text
(the image-only row of image guidance). One numpy Generator drives it all, so a seed fixes every batch.
"""

from __future__ import annotations

import numpy as np
import torch

from omnideft.errors import UserError
from omnideft.families.omnigen.collate import collate_prompts
from omnideft.families.omnigen.processor import CFG_PROMPT, NEGATIVE_PROMPT, OmniGenProcessor
from omnideft.shapes import TASKS, make_sample


class ShapeTaskStream:
    def __init__(self, processor: OmniGenProcessor, tasks: list[str], image_size: int, max_examples: int,
                 uncond_prob: float, image_only_prob: float, seed: int):
        unknown = [t for t in tasks if t not in TASKS]
        if unknown or not tasks:
            raise UserError(f"data.tasks {unknown or tasks!r}: choose from {list(TASKS)}")
        self.processor, self.tasks, self.size = processor, list(tasks), image_size
        self.max_examples, self.uncond_prob, self.image_only_prob = max_examples, uncond_prob, image_only_prob
        self.rng = np.random.default_rng(seed)

    def batch(self, batch_size: int) -> dict:
        prompts, targets, tasks = [], [], []
        for _ in range(batch_size):
            task = TASKS[self.tasks[int(self.rng.integers(len(self.tasks)))]]
            hi = max(min(self.max_examples, task.max_examples), task.min_examples)
            sample = make_sample(task, self.rng, self.size, int(self.rng.integers(task.min_examples, hi + 1)))
            u = self.rng.random()
            if u < self.uncond_prob:
                prompts.append(self.processor.encode(CFG_PROMPT if u < self.uncond_prob / 2 else NEGATIVE_PROMPT))
            elif u < self.uncond_prob + self.image_only_prob and sample.images:
                prompts.append(self.processor.encode_image_only(sample.images))
            else:
                prompts.append(self.processor.encode(sample.instruction, sample.images))
            targets.append(self.processor.process_image(sample.target))
            tasks.append(sample.task)
        batch = collate_prompts(prompts, (self.size, self.size))
        batch["output_pixels"] = torch.stack(targets)
        batch["tasks"] = tasks
        return batch
