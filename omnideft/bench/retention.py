"""`bench retention`: does the adapted model still follow plain instructions of the base task? Text-to-image on a
fixed prompt list (`--prompts FILE`, one prompt per line; default: omnideft/bench/retention_prompts.txt),
`--images-per-prompt` seeds each, scored with clip_t (add e.g. `--metrics clip_t,aesthetic,sharpness`). Compare the
base with each adapter (`omnideft bench --compare`): the drop in CLIP-T is what the adapter cost the base task."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from omnideft.bench.job import Job
from omnideft.bench.protocol import Protocol
from omnideft.errors import UserError

DEFAULT_PROMPTS = Path(__file__).with_name("retention_prompts.txt")
REF_FREE = ("clip_t", "aesthetic", "sharpness")


def read_prompt_list(path: Path) -> list[str]:
    if not path.is_file():
        raise UserError(f"--prompts {path}: file not found")
    prompts = [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
    if not prompts:
        raise UserError(f"--prompts {path}: no prompts (one per line)")
    return prompts


class RetentionProtocol(Protocol):
    name = "retention"
    summary = "base-task retention: text-to-image CLIP-T on a fixed prompt list"
    uses_shards = False

    def __init__(self, inputs):
        super().__init__(inputs)
        bad = [m for m in (inputs.metrics or ()) if m not in REF_FREE]
        if bad:
            raise UserError(f"bench retention has no reference images; --metrics {', '.join(bad)} not possible "
                            f"(choose from {', '.join(REF_FREE)})")

    def identity(self) -> dict:
        prompts = Path(self.inputs.prompts) if self.inputs.prompts else DEFAULT_PROMPTS
        return {**super().identity(), "prompt_list": read_prompt_list(prompts)}

    def jobs(self) -> Iterator[Job]:
        metrics = tuple(self.inputs.metrics or ("clip_t",))
        prompts = read_prompt_list(Path(self.inputs.prompts) if self.inputs.prompts else DEFAULT_PROMPTS)
        for p, prompt in enumerate(prompts):
            for r in range(self.inputs.images_per_prompt):
                yield Job(id=f"prompt_{p:03d}_{r}", group="text_to_image", instruction=prompt, metrics=metrics,
                          prompt=prompt)
