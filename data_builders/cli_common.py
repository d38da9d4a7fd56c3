"""The build runner shared by every `build-*` command: flags, resume, workers, partitions, progress, errors.

A builder plans a list of cheap, picklable jobs in the main process; shard k holds jobs
[k * shard_size, (k + 1) * shard_size). Samples are made and encoded in worker processes and written in job order
by the main process, so the bytes of shard k depend only on the source, the arguments and the seed — not on the
worker count, the partition, or interruptions. Partition I/N builds the shards k with k % N == I.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import hashlib
import json
import multiprocessing
import os
import shutil
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from omnideft.data.format.writer import (
    MANIFEST_NAME,
    STATE_DIR,
    TMP_PREFIX,
    BuiltSample,
    ShardRecord,
    ShardWriter,
    encode_sample,
    file_sha256,
    redact_args,
    shard_name,
    skip_summary,
    write_json_atomic,
)
from omnideft.errors import UserError
from omnideft.locks import LOCK_NAME, FolderLock
from omnideft.progress import progress_bar

from . import BUILDERS_VERSION
from .images import DEFAULT_MAX_PIXELS, SkipSample

# Flags that change how a build runs but not what it produces; they are left out of the build identity.
RUN_ONLY_ARGS = ("workers", "partition", "overwrite", "dry_run", "no_progress", "out", "caption_cache",
                 "caption_device", "min_samples", "max_skip_fraction")
BUILD_FILE = "build.json"


@dataclass(frozen=True)
class Partition:
    index: int = 0
    count: int = 1

    def owns(self, shard_index: int) -> bool:
        return shard_index % self.count == self.index

    def manifest_name(self) -> str:
        return MANIFEST_NAME if self.count == 1 else f"manifest.part-{self.index:04d}-of-{self.count:04d}.json"

    def label(self) -> str | None:
        return None if self.count == 1 else f"{self.index}/{self.count}"


def parse_partition(text: str) -> Partition:
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--partition {text!r} must look like I/N, e.g. 0/8") from None
    if n < 1 or not 0 <= i < n:
        raise argparse.ArgumentTypeError(f"--partition {text!r} needs 0 <= I < N")
    return Partition(i, n)


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} must be >= 1")
    return value


def fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} must be in [0, 1]")
    return value


def add_common_args(parser: argparse.ArgumentParser, resolution: int = 512) -> None:
    g = parser.add_argument_group("output and run control (all builders)")
    g.add_argument("--out", required=True, help="output directory; shards go to OUT/SPLIT/PREFIX-%%06d.tar")
    g.add_argument("--split", default="train", help="split to read (where the source has splits) and to write")
    g.add_argument("--prefix", default="shard", help="shard file name prefix (default: shard)")
    g.add_argument("--shard-size", type=positive_int, default=1000, help="source jobs per shard (default 1000)")
    g.add_argument("--max-samples", type=positive_int, default=None, help="plan at most this many samples")
    g.add_argument("--resolution", type=positive_int, default=resolution,
                   help=f"image size in pixels (default {resolution})")
    g.add_argument("--seed", type=int, default=0, help="seed of every random choice (default 0)")
    g.add_argument("--workers", type=positive_int, default=1, help="worker processes (output does not depend on it)")
    g.add_argument("--partition", type=parse_partition, default=Partition(),
                   help="build part I of N (shards k with k %% N == I), e.g. $SLURM_ARRAY_TASK_ID/8; "
                        "combine with build-merge")
    g.add_argument("--max-pixels", type=positive_int, default=DEFAULT_MAX_PIXELS,
                   help="skip source images with more pixels as too_large")
    g.add_argument("--min-samples", type=positive_int, default=1,
                   help="fail (exit 2) when fewer samples are built (default 1: an all-skipped build fails)")
    g.add_argument("--max-skip-fraction", type=fraction, default=1.0,
                   help="fail (exit 2) when more than this fraction of planned samples is skipped (default 1.0)")
    g.add_argument("--dry-run", action="store_true", help="print what would be built and exit")
    g.add_argument("--overwrite", action="store_true", help="replace an output directory holding a different build")
    g.add_argument("--no-progress", action="store_true", help="hide the progress bar")


class SampleMaker:
    """Lives in a worker process; turns one job into a BuiltSample or raises SkipSample."""

    def make(self, index: int, job: Any) -> BuiltSample:
        raise NotImplementedError


class SourceBuilder:
    """One source dataset. Subclasses set `name` and implement the five methods below."""

    name = "base"
    version = BUILDERS_VERSION

    def __init__(self, args: argparse.Namespace):
        self.args = args

    def fingerprint(self) -> str:
        raise NotImplementedError

    def plan(self) -> list[Any]:
        """Cheap, picklable job descriptions in build order; raise UserError for a bad source layout."""
        raise NotImplementedError

    def job_id(self, job: Any) -> str:
        return str(job)

    def job_task(self, job: Any) -> str | None:
        return None

    def open(self) -> SampleMaker:
        raise NotImplementedError

    def extra(self) -> dict:
        return {}


def fingerprint_tree(*roots: Path, limit: int = 2_000_000) -> str:
    """sha256 over (relative path, size) of every file: cheap, and changes when files are added/removed/resized."""
    h = hashlib.sha256()
    for root in roots:
        root = Path(root)
        if root.is_file():
            h.update(f"{root.name}\0{root.stat().st_size}\n".encode())
            continue
        for i, path in enumerate(sorted(p for p in root.rglob("*") if p.is_file())):
            if i >= limit:
                break
            h.update(f"{path.relative_to(root).as_posix()}\0{path.stat().st_size}\n".encode())
    return h.hexdigest()


def key_for(builder_name: str, index: int) -> str:
    return f"{builder_name}_{index:09d}"


# -- worker side ------------------------------------------------------------------------------------------------
_MAKER: SampleMaker | None = None


def _init_worker(builder: SourceBuilder) -> None:
    global _MAKER
    _MAKER = builder.open()


def _init_pool_worker(builder: SourceBuilder) -> None:
    # Ctrl-C reaches the whole process group: the main process stops the pool and says how to resume. Workers that
    # took the KeyboardInterrupt themselves printed tracebacks and left the build hanging (over 60 s, measured).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # SIGTERM ends a worker quietly (Pool.terminate sends it), not with the main process's handler inherited by fork
    # or the stack dump of glog's (imported with pycolmap).
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    # When the main process is killed (kill -9, OOM), a worker sending its result hit BrokenPipeError and printed
    # a traceback, and a worker waiting on a lock its dead sibling held hung forever (both measured): the default
    # SIGPIPE action and a SIGTERM on the parent's death end them quietly.
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    _die_with_parent()
    _init_worker(builder)


def _die_with_parent() -> None:
    """Ask Linux for a SIGTERM (quiet: the default action) when the main process dies; elsewhere nothing."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the main process died before the request was in place
        os._exit(0)


def _work(item: tuple[int, Any, str]):
    index, job, job_id = item
    try:
        return index, encode_sample(_MAKER.make(index, job)), None
    except SkipSample as skip:  # the example names the path tried, not only the id
        return index, None, (skip.reason, f"{job_id}: {skip.detail}" if skip.detail else job_id)


# -- main side --------------------------------------------------------------------------------------------------
def build_identity(builder: SourceBuilder, args: argparse.Namespace) -> dict:
    kept = {k: _jsonable(v) for k, v in sorted(vars(args).items()) if k not in RUN_ONLY_ARGS}
    return {"builder": builder.name, "builder_version": builder.version, "args": redact_args(kept),
            "source_fingerprint": builder.fingerprint()}


def _jsonable(value: Any) -> Any:
    if isinstance(value, (Path, Partition)):
        return str(value) if isinstance(value, Path) else value.label()
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def prepare_output(split_dir: Path, identity: dict, overwrite: bool, dry_run: bool) -> None:
    """Same build -> resume; different build -> refuse unless --overwrite; empty or missing -> start."""
    state_file = split_dir / STATE_DIR / BUILD_FILE
    if not split_dir.exists() or not any(not p.name.startswith(LOCK_NAME) for p in split_dir.iterdir()):
        found = None
    elif state_file.is_file():
        found = json.loads(state_file.read_text())
    else:
        found = {"builder": "(unknown: no .state/build.json)"}
    if found is not None and found != identity:
        if not overwrite:
            raise UserError(f"{split_dir} holds a different build ({describe_difference(found, identity)}); "
                            "pass --overwrite to replace it")
        if not dry_run:
            clear_build(split_dir)
    if not dry_run:
        (split_dir / STATE_DIR).mkdir(parents=True, exist_ok=True)
        write_json_atomic(state_file, identity)


def describe_difference(found: dict, wanted: dict) -> str:
    if found.get("builder") != wanted["builder"]:
        return f"builder {found.get('builder')!r}, not {wanted['builder']!r}"
    args_found, args_wanted = found.get("args", {}), wanted["args"]
    diff = sorted(k for k in set(args_found) | set(args_wanted) if args_found.get(k) != args_wanted.get(k))
    if diff:
        return "arguments differ: " + ", ".join(f"--{k.replace('_', '-')}" for k in diff)
    if found.get("source_fingerprint") != wanted["source_fingerprint"]:
        return "the source files changed"
    return "builder version differs"


def clear_build(split_dir: Path) -> None:
    for path in split_dir.iterdir():
        if path.name == STATE_DIR:
            shutil.rmtree(path)
        elif path.suffix in (".tar", ".json") or path.name.startswith(TMP_PREFIX):
            path.unlink()


def kept_shard(split_dir: Path, name: str) -> ShardRecord | None:
    """A shard finished by an earlier run, verified against its state record; None when it must be redone."""
    shard, record_file = split_dir / name, split_dir / STATE_DIR / f"{name}.json"
    tmp = split_dir / (TMP_PREFIX + name)
    if tmp.exists():
        tmp.unlink()
    if not (shard.is_file() and record_file.is_file()):
        return None
    record = ShardRecord.from_json(json.loads(record_file.read_text()))
    if record.bytes == shard.stat().st_size and record.sha256 == file_sha256(shard):
        return record
    return None


class Terminated(Exception):
    """SIGTERM (`kill`, `scancel`, a job's time limit) reached the main process of a build."""


def _raise_terminated(signum, frame):
    raise Terminated


def run_build(builder: SourceBuilder, args: argparse.Namespace) -> int:
    jobs = builder.plan()
    # Set after plan(): importing pycolmap (build-sfm) installs glog's handler, which answers SIGTERM with a native
    # stack dump in every process of the build (26-43 lines each, measured). run_main restores the previous one.
    signal.signal(signal.SIGTERM, _raise_terminated)
    if args.max_samples is not None:
        jobs = jobs[: args.max_samples]
    if not jobs:
        raise UserError(f"{getattr(args, 'src', 'source')}: nothing to build (no usable samples found)")
    part: Partition = args.partition
    n_shards = -(-len(jobs) // args.shard_size)
    mine = [k for k in range(n_shards) if part.owns(k)]
    split_dir = Path(args.out) / args.split
    identity = build_identity(builder, args)
    prepare_output(split_dir, identity, args.overwrite, args.dry_run)
    if args.dry_run:
        return print_dry_run(builder, jobs, n_shards, mine, split_dir, args)
    writer = ShardWriter(args.out, split=args.split, prefix=args.prefix, shard_size=args.shard_size,
                         builder=builder.name, builder_version=builder.version,
                         args={k: _jsonable(v) for k, v in sorted(vars(args).items())},
                         source_fingerprint=identity["source_fingerprint"], manifest_name=part.manifest_name(),
                         auto_roll=False, keep_state=True, partition=part.label(), extra=builder.extra())
    pending = []
    for k in mine:
        record = kept_shard(split_dir, shard_name(args.prefix, k))
        if record is None:
            pending.append(k)
        else:
            writer.adopt(k, record)
    if len(pending) < len(mine):
        print(f"resuming: {len(mine) - len(pending)} complete shard(s) kept, {len(pending)} to build", file=sys.stderr)
    write_shards(builder, writer, jobs, pending, args)
    path = writer.write_manifest()
    m = writer.manifest()
    skipped = sum(e["count"] for e in m["skipped"].values())
    print(f"wrote {m['samples']} samples in {len(m['shards'])} shards to {split_dir} "
          f"({skipped} skipped); manifest {path.name}")
    if m.get("captions"):  # templates standing in for captions the model did not give are said, not hidden
        captions = m["captions"]
        print(f"captions: {captions.get('model', 0)} from the model, {captions.get('template', 0)} from templates")
    check_yield(m, args)
    return 0


def check_yield(manifest: dict, args: argparse.Namespace) -> None:
    """An empty (or mostly skipped) build is a failure: exit 2 with the top skip reasons and a path tried."""
    samples, why = manifest["samples"], skip_summary(manifest["skipped"])
    skipped = sum(e["count"] for e in manifest["skipped"].values())
    tried = samples + skipped
    if samples == 0:
        raise UserError(f"built 0 of {tried} planned samples: every sample was skipped ({why}); "
                        "check --src and the image folder")
    if samples < args.min_samples:
        raise UserError(f"built {samples} samples, fewer than --min-samples {args.min_samples} "
                        f"({skipped} skipped: {why})")
    if tried and skipped / tried > args.max_skip_fraction:
        raise UserError(f"skipped {skipped} of {tried} planned samples ({skipped / tried:.1%}), more than "
                        f"--max-skip-fraction {args.max_skip_fraction:g} ({why})")


def shard_items(builder: SourceBuilder, jobs: Sequence[Any], k: int, size: int) -> list[tuple[int, Any, str]]:
    return [(i, jobs[i], builder.job_id(jobs[i])) for i in range(k * size, min(len(jobs), (k + 1) * size))]


def write_shards(builder: SourceBuilder, writer: ShardWriter, jobs: Sequence[Any], pending: list[int],
                 args: argparse.Namespace) -> None:
    plan = [(k, shard_items(builder, jobs, k, args.shard_size)) for k in pending]
    items = [item for _, shard in plan for item in shard]
    bar = progress_bar(total=len(items), unit="sample", desc=builder.name, disable=args.no_progress)
    with _results(builder, items, args.workers) as results:
        for k, shard in plan:
            writer.open_shard(k)
            for _ in shard:
                _, encoded, skip = next(results)
                if encoded is not None:
                    writer.add_encoded(encoded)
                else:
                    writer.skip(*skip)
                bar.update(1)
            writer.close_shard()
    bar.close()


class _results:
    """Ordered results of `_work` over items, in-process for one worker, from a fork pool otherwise."""

    def __init__(self, builder: SourceBuilder, items: list, workers: int):
        self.builder, self.items, self.workers, self.pool = builder, items, workers, None

    def __enter__(self) -> Iterator:
        if self.workers == 1 or len(self.items) < 2:
            _init_worker(self.builder)
            return map(_work, self.items)
        # fork: workers inherit the opened source cheaply; samples are independent of which worker makes them.
        self.pool = multiprocessing.get_context("fork").Pool(self.workers, _init_pool_worker, (self.builder,))
        chunk = max(1, min(8, len(self.items) // (self.workers * 4)))
        return self.pool.imap(_work, self.items, chunksize=chunk)

    def __exit__(self, *exc) -> None:
        if self.pool is None:
            return
        if exc[0] is not None:
            self.pool.terminate()
        else:
            self.pool.close()
        self.pool.join()


def print_dry_run(builder: SourceBuilder, jobs: Sequence[Any], n_shards: int, mine: list[int], split_dir: Path,
                  args: argparse.Namespace) -> int:
    size = args.shard_size
    my_jobs = [jobs[i] for k in mine for i in range(k * size, min(len(jobs), (k + 1) * size))]
    tasks: dict[str, int] = {}
    for job in my_jobs:
        task = builder.job_task(job) or "(decided per sample)"
        tasks[task] = tasks.get(task, 0) + 1
    kept = sum(1 for k in mine if (split_dir / shard_name(args.prefix, k)).is_file())
    part = f" (partition {args.partition.label()}: {len(mine)} shards)" if args.partition.count > 1 else ""
    print(f"dry run: would build {len(my_jobs)} of {len(jobs)} planned samples in {n_shards} shards of "
          f"{size}{part} into {split_dir}; {kept} shard file(s) already there")
    for task, n in sorted(tasks.items()):
        print(f"  {task}: {n}")
    return 0


def run_main(make_parser: Callable[[], argparse.ArgumentParser],
             make_builder: Callable[[argparse.Namespace], SourceBuilder], argv: list[str] | None) -> int:
    """Parse, build, and turn UserError into `error: ...` on stderr with exit 2 (no traceback)."""
    args = make_parser().parse_args(argv)
    previous_sigterm = signal.getsignal(signal.SIGTERM)
    try:
        with output_lock(args):  # one build per output split (per partition: partitions share a folder)
            return run_build(make_builder(args), args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume", file=sys.stderr)
        return 130
    except Terminated:  # like Ctrl-C: finished shards stay; the exit code is the shell's for a SIGTERM death
        print("stopped by SIGTERM: rerun the same command to resume", file=sys.stderr)
        return 128 + signal.SIGTERM
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise
        split_dir = Path(args.out) / args.split  # the shard being written is dropped; finished shards stay
        for tmp in split_dir.glob(f"{TMP_PREFIX}*"):
            tmp.unlink(missing_ok=True)
        free = shutil.disk_usage(split_dir if split_dir.is_dir() else ".").free
        print(f"error: cannot write {exc.filename or split_dir}: {exc.strerror} ({free / 1e6:.1f} MB free there; a "
              f"shard needs about --shard-size x the sample size); free some space and rerun to resume",
              file=sys.stderr)
        return 2
    finally:
        signal.signal(signal.SIGTERM, previous_sigterm)


def output_lock(args: argparse.Namespace):
    if args.dry_run:
        return contextlib.nullcontext()
    part: Partition = args.partition
    name = LOCK_NAME if part.count == 1 else f"{LOCK_NAME}.part-{part.index}-of-{part.count}"
    return FolderLock(Path(args.out) / args.split, "--out", name)


def require_dir(path: str | os.PathLike, what: str) -> Path:
    p = Path(path)
    if not p.is_dir():
        found = "a file" if p.is_file() else "nothing"
        raise UserError(f"--src {p}: expected {what}, found {found}")
    return p
