"""`bench subject`: DreamBench-style subject fidelity. `--shards` are `build-dreambooth --split test` outputs (one
per subject); each holds the subject's images (`dreambooth/subject` samples) and, in its manifest, the filled-in
evaluation prompts (`extra.eval_prompts`). Every prompt is generated `--images-per-prompt` times (text only, fixed
seeds) and scored per subject with:

* clip_i, dino_v1, dino_v2: mean similarity to each of the subject's reference images (as DreamBench averages over
  all generated/real pairs);
* clip_t: similarity to the prompt with the identifier token removed ("a sks dog" -> "a dog": the rare token has
  no meaning for CLIP).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

from omnideft.bench.job import Job
from omnideft.bench.protocol import Protocol, source_examples
from omnideft.data.sources import resolve_sources
from omnideft.errors import UserError

DEFAULT_METRICS = ("clip_i", "dino_v1", "dino_v2", "clip_t")


def read_manifest(urls: list[str], pattern: str) -> dict:
    path = Path(urls[0]).parent / "manifest.json"
    if not path.is_file():
        raise UserError(f"--shards {pattern}: no manifest.json beside the shards (a build-dreambooth output)")
    manifest = json.loads(path.read_text())
    if manifest.get("builder") != "dreambooth" or not manifest.get("extra", {}).get("eval_prompts"):
        raise UserError(f"--shards {pattern}: not a build-dreambooth output with evaluation prompts "
                        f"(builder {manifest.get('builder')!r})")
    return manifest


class SubjectProtocol(Protocol):
    name = "subject"
    summary = "DreamBench-style subjects (build-dreambooth outputs): CLIP-I, DINO v1/v2 per reference, CLIP-T"

    def jobs(self) -> Iterator[Job]:
        metrics = tuple(self.inputs.metrics or DEFAULT_METRICS)
        for source in resolve_sources(self.inputs.shards):
            manifest = read_manifest(source.urls, source.pattern)
            args, extra = manifest.get("args", {}), manifest["extra"]
            subject = args.get("subject") or Path(str(args.get("src", "subject"))).name
            refs = [ex.output for _, ex in source_examples(source) if ex.task == "dreambooth/subject"]
            if not refs:
                raise UserError(f"--shards {source.pattern}: no dreambooth/subject samples (reference images)")
            ref_ids = [f"{subject}/{k:02d}" for k in range(len(refs))]
            token = re.escape(str(extra.get("token", "")))
            for p, prompt in enumerate(extra["eval_prompts"]):
                plain = re.sub(rf"\s*\b{token}\b", "", prompt).strip() if token else prompt
                for r in range(self.inputs.images_per_prompt):
                    yield Job(id=f"{subject}_{p:03d}_{r}", group=subject, instruction=prompt, metrics=metrics,
                              refs=refs, ref_ids=ref_ids, prompt=plain)
