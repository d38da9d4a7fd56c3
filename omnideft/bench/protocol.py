"""The protocol interface: which jobs to generate from the inputs, and which metrics score each job."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from omnideft.bench.job import Job
from omnideft.data.format.schema import SampleError
from omnideft.data.indexed import ShardIndex
from omnideft.data.shards import Example, decode_sample
from omnideft.data.sources import ShardSource, resolve_sources
from omnideft.errors import UserError


@dataclass
class ProtocolInputs:
    shards: list[str] = field(default_factory=list)
    prompts: str | None = None  # prompt list file (retention)
    metrics: list[str] | None = None  # replaces the protocol's default metrics where it allows that
    images_per_prompt: int = 1


class Protocol:
    name: ClassVar[str]
    summary: ClassVar[str]  # one line for --help
    uses_shards: ClassVar[bool] = True  # False: the jobs come from --prompts (retention)
    metrics_override: ClassVar[bool] = True  # False: metrics follow the task (visualcloze)

    def __init__(self, inputs: ProtocolInputs):
        if self.uses_shards and not inputs.shards:
            raise UserError(f"bench {self.name} needs --shards (test shards of the build command in docs/eval.md)")
        if self.uses_shards and inputs.prompts:
            raise UserError(f"bench {self.name} takes its prompts from the shards; --prompts is for retention")
        if not self.uses_shards and inputs.shards:
            raise UserError(f"bench {self.name} reads no shards; its prompts come from --prompts FILE")
        if inputs.metrics and not self.metrics_override:
            raise UserError(f"bench {self.name} chooses metrics per task; --metrics is not allowed")
        self.inputs = inputs

    def identity(self) -> dict:
        """What the jobs depend on, for the output folder's resume check."""
        return {"shards": [str(Path(s).resolve()) for s in self.inputs.shards], "prompts": self.inputs.prompts,
                "metrics": self.inputs.metrics, "images_per_prompt": self.inputs.images_per_prompt}

    def jobs(self) -> Iterator[Job]:
        raise NotImplementedError


def source_examples(source: ShardSource) -> Iterator[tuple[str, Example]]:
    """(shard url, example) for every readable sample of one source, shards and samples in order."""
    index = ShardIndex(source.urls)
    for i in range(len(index)):
        try:
            ex = decode_sample(index.read(i))
        except SampleError:
            continue
        yield index.urls[index.samples[i].shard], ex


def shard_examples(shards: list[str]) -> Iterator[tuple[str, str, Example]]:
    """(job id, shard url, example) for every readable sample, sources in the order given. The id is the sample key,
    prefixed with the source's position when several sources are given (two builds number their keys alike)."""
    sources = resolve_sources(shards)
    for k, source in enumerate(sources):
        for url, ex in source_examples(source):
            yield (f"{k}-{ex.key}" if len(sources) > 1 else ex.key), url, ex
