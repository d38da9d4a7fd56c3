"""`omnideft cache-latents SHARDS --model M --out DIR`: every image of the shards through the model's VAE once, into
a latent cache (flow/latents.py) that `data.latents` then trains from. A verb beside train (its cache is a training
input) that loads a model, so it asks the model's family for the VAE and the images' preprocessing; a family that
declares `latents` unsupported is refused in one line before anything is read or written."""

from __future__ import annotations

from pathlib import Path

from omnideft.data.format.schema import SampleError
from omnideft.data.loader import index_sources
from omnideft.data.shards import decode_sample
from omnideft.data.sources import resolve_sources
from omnideft.families.family import TrainingSettings
from omnideft.families.registry import AUTO, resolve_family
from omnideft.flow.latents import open_out, source_shards
from omnideft.progress import progress_bar


def cache_latents(shards: list[str], model: str, out: str, max_image_size: int = 1024, revision: str | None = None,
                  seed: int = 0, progress: bool = True, family: str = AUTO) -> dict:
    """`seed` is the `tiny` model's (the recipe's model.seed): its random VAE must be the one training uses;
    `family` the recipe's model.family (auto: read from the folder)."""
    chosen = resolve_family(model, family)
    chosen.refuse("latents", f"cache-latents --model {model} (a latent cache for data.latents)")
    sources = resolve_sources(shards)  # bad globs fail before the model loads
    open_out(Path(out))  # so does an --out this verb did not write
    indexes = index_sources(sources)  # local shards indexed, URLs streamed (one reader: every shard in turn)
    backend = chosen.training_backend(TrainingSettings(model, model_seed=seed, revision=revision,
                                                       max_image_size=max_image_size))
    comps = backend.load("cpu")

    def examples():
        for index in indexes:
            for i in range(len(index)):
                try:
                    yield decode_sample(index.read(i))
                except SampleError:  # the trainer skips it too
                    continue

    bar = progress_bar(total=sum(len(ix) for ix in indexes), desc="cache-latents", disable=not progress)
    try:
        return backend.cache_latents(comps, examples(), out, source_shards(sources), progress=bar)
    finally:
        bar.close()
