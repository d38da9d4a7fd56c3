"""The latent cache: each image's VAE posterior (mean and std, fp32, safetensors), keyed by the sha256 of the
image's bytes in the shard, for one VAE (its fingerprint) at one `data.max_image_size` (the resolution images are
cropped to). `omnideft cache-latents` writes it; `data.latents` makes the trainer sample from it with the same RNG
stream as encoding would, so training with the cache gives bit-identical losses (flow/vae.py's `sample_posterior`).

Layout: `DIR/cache.json` (schema, VAE fingerprint, max_image_size, count; written last) and
`DIR/<first 2 hex>/<sha256>.safetensors` with tensors `mean`, `std` of shape [1, C, h, w]. A cache for another VAE
or image size is refused as a whole; an image without an entry (the shards changed since) stops the run naming it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from omnideft.errors import UserError
from omnideft.files import atomic_path, write_text_atomic

SCHEMA = "omnideft.latents/1"


def vae_fingerprint(vae) -> str:
    """sha256 over the VAE's config and its weights' bytes (fp32): another VAE, or the same one retrained, differs."""
    h = hashlib.sha256(json.dumps({k: v for k, v in dict(vae.config).items() if not k.startswith("_")},
                                  sort_keys=True, default=str).encode())
    for name, tensor in sorted(vae.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


def _entry(folder: Path, digest: str) -> Path:
    return folder / digest[:2] / f"{digest}.safetensors"


class LatentCache:
    """Read side: refuses a cache made for another VAE or image size when opened."""

    def __init__(self, folder: str | Path, fingerprint: str, max_image_size: int):
        self.folder = Path(folder)
        meta_path = self.folder / "cache.json"
        if not meta_path.is_file():
            raise UserError(f"data.latents {folder} is not a latent cache (no cache.json); write one with "
                            "`omnideft cache-latents SHARDS --model M --out DIR`")
        meta = json.loads(meta_path.read_text())
        if meta.get("schema") != SCHEMA:
            raise UserError(f"data.latents {folder}: schema {meta.get('schema')!r}, expected {SCHEMA}")
        if meta["vae"] != fingerprint:
            raise UserError(f"data.latents {folder} was made with another VAE (fingerprint {meta['vae'][:12]}, this "
                            f"model's is {fingerprint[:12]}); rerun omnideft cache-latents with this model")
        if meta["max_image_size"] != max_image_size:
            raise UserError(f"data.latents {folder} holds images cropped to {meta['max_image_size']} px; the recipe's "
                            f"data.max_image_size is {max_image_size}; rerun omnideft cache-latents --max-image-size "
                            f"{max_image_size}")

    def posterior(self, digest: str, sample_key: str = "?") -> tuple[torch.Tensor, torch.Tensor]:
        from safetensors.torch import load_file

        path = _entry(self.folder, digest)
        if not path.is_file():
            raise UserError(f"data.latents {self.folder} has no latent for an image of sample {sample_key} "
                            f"(sha256 {digest[:12]}): the cache is stale; rerun omnideft cache-latents on these shards")
        tensors = load_file(path)
        return tensors["mean"], tensors["std"]


def write_cache(examples, vae, processor, out: str | Path, progress=None) -> dict:
    """Encode every distinct image of `examples` (an iterable of data.shards.Example) into the cache at `out`.
    Entries already there are kept (a second run over more shards adds to it); each entry is written under a
    temporary name and renamed; cache.json is written last. Returns cache.json's content."""
    from safetensors.torch import save_file

    from omnideft.flow.vae import posterior

    folder = Path(out)
    fingerprint = vae_fingerprint(vae)
    meta_path = folder / "cache.json"
    if meta_path.is_file():
        old = json.loads(meta_path.read_text())
        if (old.get("vae"), old.get("max_image_size")) != (fingerprint, processor.max_image_size):
            raise UserError(f"{folder} is a latent cache of another VAE or image size; choose a new --out")
    written = kept = 0
    for ex in examples:
        for digest, image in zip(ex.digests, [*ex.inputs, ex.output]):
            path = _entry(folder, digest)
            if path.is_file():
                kept += 1
                continue
            mean, std = posterior(vae, processor.process_image(image)[None])
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp:
                save_file({"mean": mean.cpu().contiguous(), "std": std.cpu().contiguous()}, str(tmp),
                          metadata={"vae": fingerprint, "max_image_size": str(processor.max_image_size)})
            written += 1
        if progress is not None:
            progress.update(1)
    entries = sum(1 for _ in folder.glob("??/*.safetensors"))
    meta = {"schema": SCHEMA, "vae": fingerprint, "max_image_size": processor.max_image_size, "entries": entries,
            "written": written, "already_cached": kept}
    write_text_atomic(meta_path, json.dumps(meta, indent=2) + "\n")
    return meta
