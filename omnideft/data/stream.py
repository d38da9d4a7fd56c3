"""Streamed shards: `data.shards` entries that are URLs — http(s)://, s3://, gs:// or pipe:COMMAND — read front to
back, never seeked, at positions that are, as the indexed reader's (indexed.py), a pure function of the draw counts.

- What the URL names: a shard folder (`.../train/`, whose `manifest.json` lists the shards and their sample counts),
  the manifest itself, or a webdataset brace pattern (`.../train-{000000..000007}.tar`,
  `pipe:curl -s URL/x-{0..3}.tar`), whose sample counts come from the `manifest.json` beside the shards or, when
  there is none (pipe:), from one counting pass at start.
- Deterministic assignment: each epoch the source's shards are shuffled by (seed, source, epoch) and reader j of n
  (ranks x data workers) reads shards j, j+n, j+2n, ... of that order, each front to back. A reader's c-th draw is
  therefore a pure function of (seed, reader, c) like the indexed order's, and a checkpoint's draw counts restart
  it at the exact sample: the reader reopens the shard it stopped in and skips ahead to the sample.
- Opening: http(s) through urllib, s3:// and gs:// through fsspec (with s3fs / gcsfs installed), pipe: through
  webdataset's `gopen`; tar members are grouped into samples by webdataset's `tar_file_iterator` and
  `group_by_keys`. A failed open or a stream that breaks mid-shard is retried with exponential back-off (reopen,
  skip to the sample); then the run stops with one line naming the URL.
"""

from __future__ import annotations

import http.client
import json
import posixpath
import random
import tarfile
import time
import urllib.error
import urllib.request
from collections import Counter
from functools import lru_cache

from omnideft.data.format.schema import ManifestError, validate_manifest
from omnideft.errors import UserError

REMOTE_PREFIXES = ("http://", "https://", "s3://", "gs://", "pipe:")
ATTEMPTS = 4
BACKOFF_S = 0.5  # waits 0.5, 1, 2 s between the attempts
TIMEOUT_S = 30


def is_remote(pattern: str) -> bool:
    return pattern.startswith(REMOTE_PREFIXES)


def resolve_stream(pattern: str) -> tuple[list[str], list[int]]:
    """The shard URLs of a remote `data.shards` entry and their sample counts."""
    from braceexpand import braceexpand

    if pattern.startswith("pipe:") or "{" in pattern or pattern.endswith(".tar"):
        urls = list(braceexpand(pattern))
        if pattern.startswith("pipe:"):
            return urls, [_count_samples(u) for u in urls]
        manifest = _manifest(posixpath.dirname(urls[0]) + "/manifest.json", required=False)
        if manifest is None:
            return urls, [_count_samples(u) for u in urls]
        counts = {s["name"]: s["samples"] for s in manifest["shards"]}
        missing = [u for u in urls if posixpath.basename(u) not in counts]
        if missing:
            raise UserError(f"shard {missing[0]} is not listed in the manifest.json beside it")
        return urls, [counts[posixpath.basename(u)] for u in urls]
    folder = pattern[: -len("manifest.json")] if pattern.endswith("manifest.json") else pattern.rstrip("/") + "/"
    manifest = _manifest(folder + "manifest.json", required=True)
    shards = manifest["shards"]
    if not shards:
        raise UserError(f"{folder}manifest.json lists no shards")
    return [folder + s["name"] for s in shards], [s["samples"] for s in shards]


def _manifest(url: str, required: bool) -> dict | None:
    """The manifest at `url`, checked as a local one is (contract 1's `validate_manifest`)."""
    try:
        raw = _with_retries(url, "reading", lambda: _read_all(url), missing_ok=not required)
    except _Missing:
        return None
    try:
        return validate_manifest(json.loads(raw))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(f"{url} is not a JSON manifest") from None
    except ManifestError as exc:
        raise UserError(f"manifest {url}: {exc}") from None


def _read_all(url: str) -> bytes:
    with open_stream(url) as f:
        return f.read()


class _Missing(Exception):
    """A 404: permanent, not retried."""


def open_stream(url: str):
    """A readable binary stream of `url` (the caller closes it)."""
    if url.startswith(("http://", "https://")):
        return urllib.request.urlopen(url, timeout=TIMEOUT_S)
    if url.startswith("pipe:"):
        from webdataset.gopen import gopen

        return gopen(url, "rb")
    try:
        import fsspec

        return fsspec.open(url, "rb").open()
    except ImportError as exc:  # fsspec knows s3:// and gs:// only with their filesystem packages
        raise UserError(f"shard {url}: reading {url.split('://')[0]}:// needs {exc.name or 's3fs/gcsfs'} "
                        "installed") from None


def _with_retries(url: str, what: str, fn, missing_ok: bool = False):
    """fn() with ATTEMPTS tries and exponential back-off on network and stream errors; then one line naming `url`."""
    for attempt in range(ATTEMPTS):
        try:
            return fn()
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                if missing_ok:
                    raise _Missing() from None
                raise UserError(f"shard source {url}: {what} failed: HTTP 404 not found") from None
            reason = f"HTTP {exc.code}"
        except (OSError, tarfile.TarError, EOFError, http.client.HTTPException) as exc:  # URLError, resets, timeouts,
            # a cut-off body (IncompleteRead), a pipe: command that failed
            reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": ")
        if attempt + 1 < ATTEMPTS:
            time.sleep(BACKOFF_S * 2**attempt)
    raise UserError(f"shard source {url}: {what} failed {ATTEMPTS} times with back-off ({reason})")


def _samples(url: str):
    """The samples of one tar stream as webdataset groups them, keys without folders (as indexed.py gives them)."""
    from webdataset.tariterators import group_by_keys, tar_file_iterator

    stream = open_stream(url)
    try:
        files = (dict(f, __url__=url) for f in tar_file_iterator(stream))
        for sample in group_by_keys(files, lcase=False):
            sample["__key__"] = sample["__key__"].rsplit("/", 1)[-1]
            yield sample
    finally:
        stream.close()


def _count_samples(url: str) -> int:
    return _with_retries(url, "counting samples", lambda: sum(1 for _ in _samples(url)))


class StreamIndex:
    """A streamed source with the indexed reader's interface: `len()` samples, `read(position)` -> raw sample,
    where position p = c * readers + j is reader j's c-th draw (data/order.py passes streamed positions through).
    One cursor (open shard stream) per reader process."""

    streamed = True

    def __init__(self, urls: list[str], sizes: list[int]):
        self.urls, self.sizes = list(urls), list(sizes)
        self.problems: Counter = Counter()
        self.readers, self.seed, self.source = 1, 0, 0
        self._cursor = None  # (shard, next sample index, iterator)

    def __len__(self) -> int:
        return sum(self.sizes)

    def assign(self, readers: int, seed: int, source: int, pattern: str) -> None:
        if len(self.urls) < readers:
            raise UserError(f"shards of {pattern!r}: {len(self.urls)} shard(s) for {readers} readers (processes x "
                            "data workers); streamed shards go whole to one reader, so give at least one per reader")
        self.readers, self.seed, self.source = readers, seed, source

    def __getstate__(self):  # a DataLoader worker opens its own streams
        return dict(self.__dict__, _cursor=None)

    def locate(self, position: int) -> tuple[int, int]:
        """(shard, sample index in it) of reader `position % readers`'s draw number `position // readers`."""
        reader, draw = position % self.readers, position // self.readers
        epoch = 0
        while True:
            shards = _reader_shards(len(self.urls), self.readers, reader, self.seed, self.source, epoch)
            total = sum(self.sizes[s] for s in shards)
            if draw < total:
                break
            draw, epoch = draw - total, epoch + 1
        for shard in shards:
            if draw < self.sizes[shard]:
                return shard, draw
            draw -= self.sizes[shard]
        raise AssertionError("unreachable")

    def read(self, position: int) -> dict:
        shard, index = self.locate(position)
        return _with_retries(self.urls[shard], f"reading sample {index}", lambda: self._sample(shard, index))

    def _sample(self, shard: int, index: int) -> dict:
        try:
            if self._cursor is None or self._cursor[0] != shard or self._cursor[1] > index:
                self._cursor = (shard, 0, _samples(self.urls[shard]))
            it = self._cursor[2]
            for _ in range(index - self._cursor[1]):  # skip ahead inside the shard
                next(it)
            sample = next(it)
        except StopIteration:
            self._cursor = None
            raise UserError(f"shard {self.urls[shard]} ended before sample {index}; its manifest says "
                            f"{self.sizes[shard]} samples") from None
        except BaseException:
            self._cursor = None  # a broken stream is reopened by the retry
            raise
        self._cursor = (shard, index + 1, it)
        return sample


@lru_cache(maxsize=64)
def _reader_shards(n_shards: int, readers: int, reader: int, seed: int, source: int, epoch: int) -> tuple:
    order = list(range(n_shards))
    random.Random(f"stream-{seed}-{source}-{epoch}").shuffle(order)
    return tuple(order[reader::readers])
