"""The latent cache: each image's VAE posterior (mean and std, fp32, safetensors), keyed by the sha256 of the
image's bytes in the shard, for one VAE (its fingerprint) at one `data.max_image_size` (the resolution images are
cropped to). `omnideft cache-latents` writes it; `data.latents` makes the trainer sample from it with the same RNG
stream as encoding would, so training with the cache gives bit-identical losses (flow/vae.py's `sample_posterior`).

Layout: `DIR/<first 2 hex>/<sha256>.safetensors` with tensors `mean`, `std` of shape [1, C, h, w], and
`DIR/cache.json`: schema, VAE fingerprint, max_image_size, the sha256 of every entry file, and a record of every
shard the cache was made from (`shard_identity`). A new cache's cache.json is written first, marked unfinished, and
rewritten complete last. Opening a cache for training checks, before the first step: the VAE and image size, that
every shard of the run was cached (unchanged since), and every entry's sha256 (a damaged entry is named; hashing
reads the whole cache once, which is cheap next to encoding it).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

from omnideft.data.format.writer import file_sha256
from omnideft.errors import UserError
from omnideft.files import atomic_path, write_text_atomic

SCHEMA = "omnideft.latents/2"
OLD_SCHEMAS = ("omnideft.latents/1",)  # no shard records, no entry sums: cache-latents rechecks it, training refuses
META_NAME = "cache.json"


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


def read_meta(folder: Path, what: str) -> dict | None:
    """`folder`'s cache.json with its fields checked, None when there is none; else one line naming the file.
    `what` names where the folder came from (`data.latents`, `--out`)."""
    path = folder / META_NAME
    if not path.is_file():
        return None
    try:
        meta = json.loads(path.read_bytes())
    except ValueError as exc:  # not JSON, or not UTF-8
        raise UserError(f"{what} {folder}: {path} is not JSON ({str(exc)[:80]}); it is not a cache this omnideft "
                        "can read: write a new one with omnideft cache-latents --out NEW_DIR") from None
    schema = meta.get("schema") if isinstance(meta, dict) else None
    if schema not in (SCHEMA, *OLD_SCHEMAS):
        raise UserError(f"{what} {folder}: {path} is not a latent cache's (schema {schema!r}, expected {SCHEMA})")
    fields = {"vae": str, "max_image_size": int}
    if schema == SCHEMA:
        fields.update(complete=bool, entry_sha256=dict, shards=list)
    for name, kind in fields.items():
        if not isinstance(meta.get(name), kind):
            raise UserError(f"{what} {folder}: {path} field {name!r} is missing or not a {kind.__name__}")
    if schema == SCHEMA and not (all(isinstance(v, str) for v in meta["entry_sha256"].values())
                                 and all(isinstance(r, dict) for r in meta["shards"])):
        raise UserError(f"{what} {folder}: {path} fields 'entry_sha256' / 'shards' hold values of the wrong type")
    return meta


def shard_identity(url: str, samples: int | None) -> dict:
    """What cache.json records of a shard: a local file's name, size and mtime (plus its sha256 when cached); a
    streamed shard's name and sample count (`samples`, from its manifest: a stream is not hashed before it is read)."""
    name = url.rstrip("/").rsplit("/", 1)[-1]
    if samples is not None:
        return {"name": name, "samples": samples}
    stat = os.stat(url)
    return {"name": name, "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def source_shards(sources) -> list[tuple[str, int | None]]:
    """(url, samples) of every shard of data.sources' `ShardSource`s; samples None for local shards."""
    return [(url, None if s.sizes is None else s.sizes[i]) for s in sources for i, url in enumerate(s.urls)]


def _was_cached(url: str, samples: int | None, records: list[dict]) -> bool:
    """Whether `url` is a shard the cache was made from: the recorded name, size and mtime (a stat), else the same
    size and sha256 (a copy elsewhere, or rewritten with the same bytes: one read of that shard)."""
    ident = shard_identity(url, samples)
    if samples is not None:
        return any(r.get("name") == ident["name"] and r.get("samples") == samples for r in records)
    same_size = [r for r in records if r.get("bytes") == ident["bytes"]]
    if any(r.get("name") == ident["name"] and r.get("mtime_ns") == ident["mtime_ns"] for r in same_size):
        return True
    return bool(same_size) and file_sha256(Path(url)) in {r.get("sha256") for r in same_size}


class LatentCache:
    """Read side. Opening refuses, one line each: no or an unreadable cache.json, a cache of another VAE or image
    size, an unfinished one, a shard of `sources` (data.sources' ShardSource list) it was not made from, and an entry
    whose sha256 differs from the one recorded."""

    def __init__(self, folder: str | Path, fingerprint: str, max_image_size: int, sources):
        self.folder = Path(folder)
        meta = read_meta(self.folder, "data.latents")
        if meta is None:
            raise UserError(f"data.latents {folder} is not a latent cache (no cache.json); write one with "
                            "`omnideft cache-latents SHARDS --model M --out DIR`")
        if meta["schema"] != SCHEMA:
            raise UserError(f"data.latents {folder} was written by an older omnideft (schema {meta['schema']}: no "
                            f"shard records or entry checksums); rerun omnideft cache-latents --out {folder} on "
                            "these shards (it keeps the entries that load)")
        if meta["vae"] != fingerprint:
            raise UserError(f"data.latents {folder} was made with another VAE (fingerprint {meta['vae'][:12]}, this "
                            f"model's is {fingerprint[:12]}); rerun omnideft cache-latents with this model")
        if meta["max_image_size"] != max_image_size:
            raise UserError(f"data.latents {folder} holds images cropped to {meta['max_image_size']} px; the recipe's "
                            f"data.max_image_size is {max_image_size}; rerun omnideft cache-latents --max-image-size "
                            f"{max_image_size}")
        if not meta["complete"]:
            raise UserError(f"data.latents {folder} is unfinished (omnideft cache-latents stopped before its end); "
                            f"rerun it with --out {folder}")
        for url, samples in source_shards(sources):
            if not _was_cached(url, samples, meta["shards"]):
                raise UserError(f"data.latents {folder} was not made from shard {url} (changed or added since the "
                                "cache was written): the cache is stale; rerun omnideft cache-latents on these shards")
        self.entry_sha256: dict[str, str] = meta["entry_sha256"]
        for digest, expected in self.entry_sha256.items():
            path = _entry(self.folder, digest)
            if _entry_sha256(path) != expected:
                state = "is missing" if not path.is_file() else "is damaged (its sha256 differs from cache.json's)"
                raise UserError(f"data.latents {folder}: entry {path} {state}; rerun omnideft cache-latents --out "
                                f"{folder} on these shards to encode it again")

    def posterior(self, digest: str, sample_key: str = "?") -> tuple[torch.Tensor, torch.Tensor]:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        path = _entry(self.folder, digest)
        if digest not in self.entry_sha256:
            raise UserError(f"data.latents {self.folder} has no latent for an image of sample {sample_key} "
                            f"(sha256 {digest[:12]}): the cache is stale; rerun omnideft cache-latents on these shards")
        try:
            tensors = load_file(path)
            return tensors["mean"], tensors["std"]
        except (OSError, SafetensorError, KeyError) as exc:  # changed on disk since it was verified at the start
            raise UserError(f"data.latents {self.folder}: entry {path} does not load ({exc})") from None


def _entry_sha256(path: Path) -> str | None:
    return file_sha256(path) if path.is_file() else None


def open_out(folder: Path) -> dict | None:
    """cache-latents' --out: a new or empty folder, or a cache this verb wrote (its cache.json, returned); anything
    else is refused before anything is written (no verb replaces what it did not write)."""
    if folder.exists() and not folder.is_dir():
        raise UserError(f"--out {folder} is a file, not a folder; choose a new --out (nothing was changed)")
    meta = read_meta(folder, "--out")
    if meta is None and folder.is_dir() and any(folder.iterdir()):
        raise UserError(f"--out {folder} is a folder that is not empty and not a latent cache (no cache.json); "
                        "choose an empty or new folder (nothing was changed)")
    return meta


def _sound_entry(path: Path) -> bool:
    """An entry no cache.json vouches for (a killed run's, an older cache's) is kept only when it loads whole
    with finite values and a positive std."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        tensors = load_file(path)
        mean, std = tensors["mean"], tensors["std"]
    except (OSError, SafetensorError, KeyError):
        return False
    return bool(torch.isfinite(mean).all() and torch.isfinite(std).all() and (std > 0).all())


def write_cache(examples, vae, processor, out: str | Path, shards: list[tuple[str, int | None]],
                progress=None) -> dict:
    """Encode every distinct image of `examples` (an iterable of data.shards.Example) into the cache at `out`, and
    record `shards` ((url, samples) of every shard they come from: `source_shards`) as cached. Entries already there
    whose sha256 matches cache.json's are kept (a second run over more shards adds to it); damaged ones are encoded
    again. Each entry is written under a temporary name and renamed. Returns cache.json's content."""
    from safetensors.torch import save_file

    from omnideft.flow.vae import posterior

    folder = Path(out)
    fingerprint = vae_fingerprint(vae)
    old = open_out(folder)
    if old is not None and (old["vae"], old["max_image_size"]) != (fingerprint, processor.max_image_size):
        raise UserError(f"{folder} is a latent cache of another VAE or image size; choose a new --out")
    meta = {"schema": SCHEMA, "vae": fingerprint, "max_image_size": processor.max_image_size, "complete": False,
            "entries": 0, "entry_sha256": {}, "shards": []}
    if old is None:  # first: a killed run leaves a folder this verb knows as its own
        _write_meta(folder, meta)
    sums: dict[str, str] = dict(old.get("entry_sha256") or {}) if old else {}
    done: set[str] = set()  # digests this run checked or wrote (an image recurs across samples)
    written = kept = 0
    for ex in examples:
        for digest, image in zip(ex.digests, [*ex.inputs, ex.output]):
            if digest in done:
                kept += 1
                continue
            done.add(digest)
            path = _entry(folder, digest)
            found = _entry_sha256(path)
            if found is not None and (found == sums.get(digest) or (digest not in sums and _sound_entry(path))):
                sums[digest] = found
                kept += 1
                continue
            mean, std = posterior(vae, processor.process_image(image)[None])
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp:
                save_file({"mean": mean.cpu().contiguous(), "std": std.cpu().contiguous()}, str(tmp),
                          metadata={"vae": fingerprint, "max_image_size": str(processor.max_image_size)})
                sums[digest] = file_sha256(tmp)
            written += 1
        if progress is not None:
            progress.update(1)
    records = (old.get("shards") or []) if old else []
    for url, samples in shards:  # after the entries: a shard is recorded only once all its images are
        ident = shard_identity(url, samples)
        records.append(ident if samples is not None else {**ident, "sha256": file_sha256(Path(url))})
    unique = {(r.get("name"), r.get("bytes"), r.get("sha256"), r.get("samples")): r for r in records}
    meta.update(complete=True, entries=len(sums), entry_sha256=dict(sorted(sums.items())),
                shards=list(unique.values()), written=written, already_cached=kept)
    _write_meta(folder, meta)
    return meta


def _write_meta(folder: Path, meta: dict) -> None:
    write_text_atomic(folder / META_NAME, json.dumps(meta, indent=1) + "\n")
