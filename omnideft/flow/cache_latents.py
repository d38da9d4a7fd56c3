"""`omnideft cache-latents SHARDS --model M --out DIR`: every image of the shards through the model's VAE once, into
a latent cache (flow/latents.py) that `data.latents` then trains from."""

from __future__ import annotations

from pathlib import Path

from omnideft.data.format.schema import SampleError
from omnideft.data.loader import index_sources
from omnideft.data.shards import decode_sample
from omnideft.data.sources import resolve_sources
from omnideft.flow.latents import open_out, source_shards, write_cache
from omnideft.model import load_omnigen
from omnideft.progress import progress_bar
from omnideft.prompts import OmniGenProcessor


def cache_latents(shards: list[str], model: str, out: str, max_image_size: int = 1024, revision: str | None = None,
                  seed: int = 0, progress: bool = True) -> dict:
    """`seed` is the `tiny` model's (the recipe's model.seed): its random VAE must be the one training uses."""
    sources = resolve_sources(shards)  # bad globs fail before the model loads
    open_out(Path(out))  # so does an --out this verb did not write
    indexes = index_sources(sources)  # local shards indexed, URLs streamed (one reader: every shard in turn)
    comps = load_omnigen(model, revision=revision, seed=seed)
    processor = OmniGenProcessor(comps.tokenizer, max_image_size=max_image_size)

    def examples():
        for index in indexes:
            for i in range(len(index)):
                try:
                    yield decode_sample(index.read(i))
                except SampleError:  # the trainer skips it too
                    continue

    bar = progress_bar(total=sum(len(ix) for ix in indexes), desc="cache-latents", disable=not progress)
    try:
        return write_cache(examples(), comps.vae, processor, out, source_shards(sources), progress=bar)
    finally:
        bar.close()
