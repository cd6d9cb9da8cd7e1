"""Corpus runs: the items a shard takes, a pool of worker processes, and the shard records `vqtok merge` checks.

`encode_corpus` runs a folder plan of `vqtok encode` through all three: the shard's items, in chunks, through
the pipeline's EncodeWork in each worker (pipeline.run_jobs: resume, per-file errors), the manifest written by
the parent in input order, then (``--format parquet``) the Parquet files (data/parquet.py).

Sharding. `--shard I/N` takes a deterministic 1/N of a run's items, chosen by their keys (paths relative to the
input root) so every machine of a job agrees without talking: ``position`` cuts the sorted keys into N
contiguous runs (shard sizes differ by at most one item), ``hash`` takes the items whose key's SHA-256 is I
modulo N (an item stays in its shard when others are added). Without --shard the shard comes from the
launcher: torchrun's ``RANK`` / ``WORLD_SIZE``, or a Slurm array's ``SLURM_ARRAY_TASK_ID`` /
``SLURM_ARRAY_TASK_COUNT`` (counted from ``SLURM_ARRAY_TASK_MIN``).

Workers. `run_pool` feeds tasks, in order, to N processes started with the spawn method (a fork would copy
the parent's torch thread pool and any CUDA state), each with one torch thread and its own model built once
by a factory. Results come back as they finish; the caller keeps them by index, so its output order is the
input order whatever the timing. A worker that dies (killed, out of memory) breaks the pool: the tasks not
finished are given to a fresh pool (up to `MAX_RESTARTS` times), so a killed worker costs only its unfinished
task, whose outputs already written are kept by the caller's resume. Ctrl-C stops the workers (each ends its
current file's atomic write or removes it) and raises KeyboardInterrupt for the caller to save what is done.

Shard record (``shard-IIIII-of-NNNNN.json`` in the output folder, written at the end of each shard's run)::

    {"shard": [0, 3], "by": "position", "total": 405, "keys_sha256": "...", "planned": 135,
     "done": ["a/1.flac", ...], "failed": {"a/bad.flac": "a/bad.flac: not readable as audio (...)"},
     "format": "npy", "manifest": "manifest-00000-of-00003.jsonl", "files": []}

``total`` and ``keys_sha256`` (of the sorted keys of the whole run) let the merge check that every shard saw
the same inputs; ``done`` and ``failed`` that each item was handled by exactly one shard.
"""

from __future__ import annotations

import concurrent.futures as cf
import functools
import hashlib
import json
import logging
import multiprocessing
import os
import resource
import shutil
import signal
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from vqtok.codec import Codec
from vqtok.device import pick_device
from vqtok.errors import VqtokError
from vqtok.files import atomic_write_text
from vqtok.pipeline import EncodeWork, Job, Plan, label_function, prepare_output_dirs, run_jobs
from vqtok.tokenizer.checkpoint import load_tokenizer
from vqtok.tokenizer.codes import read_codes

logger = logging.getLogger(__name__)

SHARD_BY = ("position", "hash")
MAX_RESTARTS = 3  # fresh pools after a worker died, per run: a task that kills every worker is not retried forever
# (rank, size, launcher): the environment variables a launcher sets, in the order they are tried
LAUNCHERS = (("RANK", "WORLD_SIZE", "torchrun"), ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT", "Slurm array"))


@dataclass(frozen=True)
class Shard:
    """Shard `index` of `count` (0 <= index < count)."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if not (self.count >= 1 and 0 <= self.index < self.count):
            raise VqtokError(f"shard {self.index}/{self.count}: the index must be 0..{self.count - 1} of a count >= 1")

    @property
    def tag(self) -> str:
        """'00001-of-00003': the part of a shard's file names that says which shard wrote them."""
        return f"{self.index:05d}-of-{self.count:05d}"

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str) -> Shard:
    """'I/N' -> Shard(I, N)."""
    index, _, count = text.partition("/")
    try:
        return Shard(int(index), int(count))
    except ValueError:
        raise VqtokError(f"--shard {text}: expected I/N, e.g. 0/4 for the first of four shards") from None


def shard_from_env(env: Mapping[str, str] = os.environ) -> tuple[Shard, str] | None:
    """The shard a launcher gives this process, and the launcher's name; None outside one (or a world of one)."""
    for rank_var, size_var, launcher in LAUNCHERS:
        if rank_var in env and size_var in env:
            try:
                rank, size = int(env[rank_var]), int(env[size_var])
                if rank_var.startswith("SLURM"):
                    rank -= int(env.get("SLURM_ARRAY_TASK_MIN", 0))
                shard = Shard(rank, size)
            except (ValueError, VqtokError):
                raise VqtokError(f"{rank_var}={env[rank_var]} {size_var}={env[size_var]} (from {launcher}): not a "
                                 "shard index below the count; pass --shard I/N yourself") from None
            return (shard, launcher) if size > 1 else None
    return None


def key_shard(key: str, count: int) -> int:
    """The shard of `key` under 'hash': stable across runs, machines and Python versions."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % count


def select(keys: Sequence[str], shard: Shard | None, by: str = "position") -> list[int]:
    """Indices (into `keys`, ascending) of the items `shard` takes."""
    if shard is None or shard.count == 1:
        return list(range(len(keys)))
    if by == "hash":
        return [i for i, k in enumerate(keys) if key_shard(k, shard.count) == shard.index]
    if by != "position":
        raise VqtokError(f"shard selection {by!r}: choose one of {', '.join(SHARD_BY)}")
    order = sorted(range(len(keys)), key=lambda i: keys[i])
    n = len(order)
    return sorted(order[shard.index * n // shard.count:(shard.index + 1) * n // shard.count])


def keys_digest(keys: Sequence[str]) -> str:
    """SHA-256 of the sorted keys: equal for two runs that saw the same items."""
    return hashlib.sha256("\n".join(sorted(keys)).encode()).hexdigest()


# ------------------------------------------------------------------ worker pool
@dataclass
class PoolStats:
    """What a pool run measured: peak resident memory per worker process (bytes, by pid) and pool restarts."""

    peak_rss: dict[int, int] = field(default_factory=dict)
    restarts: int = 0


_work: Callable[[Any], Any] | None = None  # the task function a worker's factory built, one per process


def _start_worker(factory: Callable[[], Callable[[Any], Any]], threads: int) -> None:
    global _work
    # Ctrl-C reaches the whole process group: the parent alone decides, and stops the workers itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # SIGTERM as an exception, so an atomic write in progress removes its temporary file (files.atomic_write).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    import torch  # the workers exist to run torch; the parent may never need it

    torch.set_num_threads(threads)
    _work = factory()


def _run_task(task: Any) -> tuple[Any, int, int]:
    try:
        result = _work(task)
    except SystemExit as stop:  # SIGTERM, after the task's cleanup ran: end the process, not just the task
        os._exit(stop.code if isinstance(stop.code, int) else 1)
    return result, os.getpid(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def run_pool(factory: Callable[[], Callable[[Any], Any]], tasks: Sequence[Any], workers: int,
             on_result: Callable[[int, Any], None], threads: int = 1,
             echo: Callable[[str], None] = logger.warning) -> PoolStats:
    """Run `factory()(task)` for every task in `workers` processes; `on_result(index, result)` as each finishes.

    `factory` must pickle (a module-level function, class or functools.partial of one): it runs once per
    worker. Tasks are handed out in order, at most two per worker ahead, so an interrupted run leaves the
    unstarted tasks untouched. With `workers` 1 everything runs in this process (same results, no pickling).
    """
    stats = PoolStats()
    if workers <= 1:
        work = factory()
        for i, task in enumerate(tasks):
            on_result(i, work(task))
        stats.peak_rss[os.getpid()] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        return stats
    todo = list(range(len(tasks)))
    while todo:
        todo = _pool_pass(factory, tasks, todo, workers, threads, on_result, stats)
        if todo:
            stats.restarts += 1
            if stats.restarts > MAX_RESTARTS:
                raise VqtokError(f"worker processes died {stats.restarts} times (killed, or out of memory); "
                                 f"{len(todo)} task(s) not done; rerun the same command to resume")
            echo(f"warning: a worker process died (killed, or out of memory); {len(todo)} task(s) not finished "
                 "are given to fresh workers")
    return stats


def _pool_pass(factory, tasks, todo: list[int], workers: int, threads: int, on_result, stats: PoolStats) -> list[int]:
    """One pool's life: the task indices it did not finish (a worker died), or [] when all are done."""
    context = multiprocessing.get_context("spawn")
    pool = cf.ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker,
                                  initargs=(factory, threads))
    queue = list(reversed(todo))  # pop() hands out the lowest index first
    running: dict[cf.Future, int] = {}
    unfinished: list[int] = []
    try:
        while queue or running:
            while queue and len(running) < 2 * workers:
                i = queue.pop()
                running[pool.submit(_run_task, tasks[i])] = i
            finished, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
            for future in sorted(finished, key=running.get):
                i = running.pop(future)
                try:
                    result, pid, rss = future.result()
                except BrokenProcessPool:
                    unfinished.append(i)
                    continue
                stats.peak_rss[pid] = max(stats.peak_rss.get(pid, 0), rss)
                on_result(i, result)
            if unfinished:
                # Every task still running is lost with the pool; the unstarted ones were never handed out.
                return sorted(unfinished + list(running.values()) + queue)
        return []
    except BaseException:
        _stop(pool)
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _stop(pool: cf.ProcessPoolExecutor) -> None:
    """End the workers now (Ctrl-C, an error in the parent): each removes its half-written file on SIGTERM."""
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        if process.is_alive():
            process.terminate()


# ------------------------------------------------------------------ shard records
def record_path(folder: Path, shard: Shard) -> Path:
    return folder / f"shard-{shard.tag}.json"


def manifest_name(shard: Shard | None) -> str:
    return "manifest.jsonl" if shard is None else f"manifest-{shard.tag}.jsonl"


def write_record(folder: Path, shard: Shard, by: str, keys: Sequence[str], planned: Sequence[str],
                 done: Sequence[str], failed: Mapping[str, str], fmt: str, manifest: str | None,
                 files: Sequence[str] = ()) -> Path:
    """The shard record (module doc) of a finished shard run."""
    record = {"shard": [shard.index, shard.count], "by": by, "total": len(keys), "keys_sha256": keys_digest(keys),
              "planned": len(planned), "done": list(done), "failed": dict(failed), "format": fmt,
              "manifest": manifest, "files": list(files)}
    path = record_path(folder, shard)
    atomic_write_text(path, json.dumps(record, indent=1) + "\n")
    return path


def read_record(path: Path) -> dict[str, Any]:
    try:
        record = json.loads(path.read_text())
        for key in ("shard", "total", "keys_sha256", "planned", "done", "failed", "format"):
            record[key]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as err:
        raise VqtokError(f"{path}: not a readable shard record ({' '.join(str(err).split())}); rerun that shard") from None
    return record


@dataclass
class MergeReport:
    """The shards of one output folder joined: every item once, in sorted key order."""

    shards: int
    total: int
    done: list[str]
    failed: dict[str, str]
    fmt: str
    manifests: list[Path]
    files: list[Path]
    records: list[tuple[Path, dict]] = field(default_factory=list)


def check_shards(folder: Path) -> MergeReport:
    """Read every shard record in `folder` and check them: one count, all shards there, the same inputs, every
    item done or failed by exactly one shard. Each problem is a one-line VqtokError saying which shard to rerun."""
    paths = sorted(folder.glob("shard-*-of-*.json"))
    if not paths:
        raise VqtokError(f"{folder}: no shard records (shard-I-of-N.json); run vqtok encode --shard I/N -o {folder} "
                         "for every shard first")
    records = [read_record(p) for p in paths]
    counts = {r["shard"][1] for r in records}
    if len(counts) != 1:
        raise VqtokError(f"{folder}: shard records of different shard counts ({sorted(counts)}); remove the stale ones")
    count = counts.pop()
    have = {r["shard"][0] for r in records}
    missing = sorted(set(range(count)) - have)
    if missing:
        raise VqtokError(f"{folder}: shard(s) {', '.join(f'{i}/{count}' for i in missing)} not finished; run them "
                         "(vqtok encode --shard I/N) and merge again")
    first = records[0]
    for path, r in zip(paths, records):
        if (r["total"], r["keys_sha256"]) != (first["total"], first["keys_sha256"]):
            raise VqtokError(f"{path}: saw {r['total']} inputs, {paths[0].name} saw {first['total']} (or other ones); "
                             "every shard must be run on the same inputs")
        if r["format"] != first["format"]:
            raise VqtokError(f"{path}: format {r['format']}, {paths[0].name} has {first['format']}; one format per folder")
        handled = len(r["done"]) + len(r["failed"])
        if handled != r["planned"]:
            raise VqtokError(f"{path}: {handled} of its {r['planned']} items handled (interrupted); rerun shard "
                             f"{r['shard'][0]}/{count} to resume it")
    owner: dict[str, Path] = {}
    for path, r in zip(paths, records):
        for key in list(r["done"]) + list(r["failed"]):
            if key in owner:
                raise VqtokError(f"{key}: handled by both {owner[key].name} and {path.name}; the shards overlap "
                                 "(were they run with different --shard-by?)")
            owner[key] = path
    if len(owner) != first["total"]:
        raise VqtokError(f"{folder}: the shards handled {len(owner)} items of {first['total']}; rerun them")
    failed = {k: v for r in records for k, v in r["failed"].items()}
    return MergeReport(count, first["total"], sorted(k for r in records for k in r["done"]), failed, first["format"],
                       [folder / r["manifest"] for r in records if r.get("manifest")],
                       [folder / f for r in records for f in r.get("files", [])], list(zip(paths, records)))


def merge_shards(folder: Path, report: MergeReport) -> Path | None:
    """Check each shard's data against its record, then, for token files, write ``manifest.jsonl``: the shards'
    manifest lines ordered by item key (the input order of a folder run). Returns the manifest written (None for
    Parquet, whose files need no joining)."""
    pairs: list[tuple[str, dict]] = []
    for path, record in report.records:
        if record["format"] == "parquet":
            from vqtok.data.parquet import CodesParquet  # pyarrow is an optional extra: needed only here

            files = [folder / f for f in record["files"]]
            ids = CodesParquet(files).ids() if files else []
            if ids != list(record["done"]):
                raise VqtokError(f"{path}: its Parquet files hold {len(ids)} rows, the record lists "
                                 f"{len(record['done'])} items (or others); rerun that shard with --force")
            continue
        manifest = folder / record["manifest"]
        try:
            lines = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
        except (OSError, json.JSONDecodeError) as err:
            raise VqtokError(f"{manifest}: unreadable shard manifest ({' '.join(str(err).split())}); rerun that "
                             "shard") from None
        if len(lines) != len(record["done"]):
            raise VqtokError(f"{manifest}: {len(lines)} lines, its record lists {len(record['done'])} items; "
                             "rerun that shard")
        for key, entry in zip(record["done"], lines):
            if not (folder / entry["codes"]).is_file():
                raise VqtokError(f"{folder / entry['codes']}: listed in {manifest.name} but missing; rerun that shard")
            pairs.append((key, entry))
    if report.fmt == "parquet":
        return None
    return write_manifest_as(folder / manifest_name(None), [entry for _, entry in sorted(pairs, key=lambda p: p[0])])


# ------------------------------------------------------------------ corpus encoding
@dataclass
class EncodeSettings:
    """What each worker builds its encoder from (pickled to spawned workers): `vqtok encode`'s options."""

    model: Path  # the tokenizer file
    manifest_dir: Path  # the folder manifest entries are relative to
    device: str = "cpu"
    at_level: bool = True
    chunk_seconds: float | None = 10.0
    batch_size: int = 1
    force: bool = False
    labels: str = "none"  # pipeline.label_function's choice
    classes: dict[str, int] = field(default_factory=dict)  # first folder -> class, over the whole run ('folder')
    codebooks: int | None = None  # a multi-codebook tokenizer's prefix (vqtok encode --codebooks)


@dataclass
class ChunkResult:
    entries: dict[str, dict]  # key -> manifest entry, for the jobs done now or before
    failed: dict[str, str]  # key -> the one-line error
    done: int
    skipped: int


class _Recorder:
    """A pipeline Work that keeps each job's manifest entry or error by key and writes no manifest (the parent
    writes one for the whole run)."""

    manifest = False

    def __init__(self, work):
        self.work, self.batch_size = work, work.batch_size
        self.entries: dict[str, dict] = {}
        self.failed: dict[str, str] = {}

    def done(self, job: Job, resume: bool, manifest_dir: Path | None) -> dict | None:
        entry = self._noting(job, lambda: self.work.done(job, resume, manifest_dir))
        if entry is not None:
            self.entries[job.key] = entry
        return entry

    def start(self, job: Job):
        return self._noting(job, lambda: self.work.start(job))

    def finish(self, jobs: list[Job], inputs: list, manifest_dir: Path | None) -> list:
        results = self.work.finish(jobs, inputs, manifest_dir)
        for job, result in zip(jobs, results):
            if isinstance(result, VqtokError):
                self.failed[job.key] = str(result)
            else:
                self.entries[job.key] = result
        return results

    def _noting(self, job: Job, call):
        try:
            return call()
        except VqtokError as err:
            self.failed[job.key] = str(err)
            raise


class EncodeChunks:
    """Built once per worker: the tokenizer, its Codec and the pipeline's EncodeWork; encodes lists of jobs."""

    def __init__(self, settings: EncodeSettings):
        # Workers draw no bars: a thread lock for tqdm instead of its default process-shared one, a semaphore
        # that a worker stopped by SIGTERM or SIGKILL would leave behind (and multiprocessing report at exit).
        tqdm.set_lock(threading.RLock())
        tok = load_tokenizer(settings.model, pick_device(settings.device))
        codec = Codec(tok, at_level=settings.at_level, chunk_seconds=settings.chunk_seconds,
                      batch_size=settings.batch_size, codebooks=settings.codebooks)
        self.settings = settings
        self.work = EncodeWork(codec, settings.force, label_function(settings.model, settings.labels),
                               settings.labels, settings.classes)

    def __call__(self, jobs: list[Job]) -> ChunkResult:
        recorder = _Recorder(self.work)
        report = run_jobs(Plan(jobs, self.settings.manifest_dir), recorder, progress=False, echo=lambda _: None)
        for job in jobs:
            if job.key not in recorder.entries and job.key not in recorder.failed:
                recorder.failed[job.key] = job.error or f"{job.source}: not encoded"
        return ChunkResult(recorder.entries, recorder.failed, report.done, report.skipped)


@dataclass
class CorpusReport:
    planned: int = 0
    done: int = 0
    skipped: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    entries: list[dict] = field(default_factory=list)  # manifest entries in input order
    files: list[Path] = field(default_factory=list)  # Parquet files written
    stats: PoolStats = field(default_factory=PoolStats)
    already_done: bool = False


def encode_corpus(plan: Plan, settings: EncodeSettings, workers: int = 1, shard: Shard | None = None,
                  by: str = "position", fmt: str = "npy", progress: bool = True,
                  echo: Callable[[str], None] = print, chunk: int | None = None,
                  target_bytes: int | None = None, threads: int = 1) -> CorpusReport:
    """Encode the items of `plan` that `shard` takes, in `workers` processes, to token files or Parquet.

    Token files (`fmt` 'npy') go where the plan says; the manifest (``manifest.jsonl``, or
    ``manifest-IIIII-of-NNNNN.jsonl`` for a shard) lists the items in input order, and a shard also writes its
    record (module doc). Parquet: items are encoded to token files in a staging folder
    (``.staging-IIIII-of-NNNNN`` in the output folder; what makes an interrupted run resume), then written to
    ``codes-NNNNN.parquet`` (``codes-IIIII-of-NNNNN-NNNNN.parquet`` for a shard) in input order, the record
    written, the staging folder removed. A run whose record says it is complete is not redone (unless
    `settings.force`). Ctrl-C or a fatal error still writes the manifest of what is done before raising.
    """
    folder = settings.manifest_dir
    keys = [job.key for job in plan.jobs]
    picked = [plan.jobs[i] for i in select(keys, shard, by)]
    report = CorpusReport(planned=len(picked))
    tag_shard = shard or Shard(0, 1)
    if fmt == "parquet":
        if not settings.force and _finished(folder, tag_shard, keys, fmt):
            report.already_done = True
            return report
        staging = folder / f".staging-{tag_shard.tag}"
        picked = [Job(j.source, staging / j.out.relative_to(folder), j.key, j.error) for j in picked]
        settings = EncodeSettings(**{**settings.__dict__, "manifest_dir": staging})
    prepare_output_dirs([Plan(picked, settings.manifest_dir)])
    size = chunk or max(4, settings.batch_size)
    chunks = [picked[i:i + size] for i in range(0, len(picked), size)]
    results: dict[int, ChunkResult] = {}
    bar = tqdm(total=len(picked), desc="encoding", unit="file", disable=not progress or len(picked) < 2,
               dynamic_ncols=True)

    def keep(i: int, result: ChunkResult) -> None:
        results[i] = result
        for key, message in result.failed.items():
            echo(f"error: {message}")
        bar.update(len(chunks[i]))

    try:
        report.stats = run_pool(functools.partial(EncodeChunks, settings), chunks, workers, keep, threads, echo)
    finally:
        bar.close()
        report.entries = [r.entries[j.key] for i, r in sorted(results.items()) for j in chunks[i]
                          if j.key in r.entries]
        report.failed = {k: v for _, r in sorted(results.items()) for k, v in r.failed.items()}
        report.done = sum(r.done for r in results.values())
        report.skipped = sum(r.skipped for r in results.values())
        if fmt == "npy" and (report.entries or not report.failed):
            write_manifest_as(folder / manifest_name(shard), report.entries)
    done_keys = [j.key for i in sorted(results) for j in chunks[i] if j.key in results[i].entries]
    if fmt == "parquet":
        report.files = _to_parquet(picked, results, chunks, folder, tag_shard if shard else None, settings,
                                   target_bytes)
        shutil.rmtree(staging, ignore_errors=True)  # only this shard's: others may be writing theirs
    if shard is not None or fmt == "parquet":
        write_record(folder, tag_shard, by, keys, [j.key for j in picked], done_keys, report.failed, fmt,
                     manifest_name(shard) if fmt == "npy" else None,
                     [f.relative_to(folder).as_posix() for f in report.files])
    return report


def write_manifest_as(path: Path, entries: list[dict]) -> Path:
    atomic_write_text(path, "".join(json.dumps(e) + "\n" for e in entries))
    return path


def _finished(folder: Path, shard: Shard, keys: Sequence[str], fmt: str) -> bool:
    """Whether the record of `shard` in `folder` says this very run (same inputs, format) is complete."""
    path = record_path(folder, shard)
    if not path.is_file():
        return False
    try:
        record = read_record(path)
    except VqtokError:
        return False
    return (record["format"] == fmt and record["keys_sha256"] == keys_digest(keys)
            and len(record["done"]) + len(record["failed"]) == record["planned"]
            and all((folder / f).is_file() for f in record.get("files", [])))


def _to_parquet(picked: list[Job], results: dict[int, ChunkResult], chunks: list[list[Job]], folder: Path,
                shard: Shard | None, settings: EncodeSettings, target_bytes: int | None) -> list[Path]:
    """The staged token files of a finished run, in input order, as Parquet files; stale files of an earlier run
    of this shard (a larger one) removed."""
    from vqtok.data.parquet import SUFFIX, ParquetWriter, item_row  # pyarrow is an optional extra: needed only here

    prefix = "codes" if shard is None else f"codes-{shard.tag}"
    writer = None
    for i in sorted(results):
        for job in chunks[i]:
            if job.key not in results[i].entries:
                continue
            file = read_codes(job.out)
            if writer is None:
                writer = ParquetWriter(folder, file.meta["tokenizer"], prefix,
                                       **({"target_bytes": target_bytes} if target_bytes else {}))
            writer.add(item_row(job.key, file.levels, file.source, file.label))
    files = writer.close() if writer is not None else []
    for stale in folder.glob(f"{prefix}-[0-9][0-9][0-9][0-9][0-9]{SUFFIX}"):
        if stale not in files:
            stale.unlink()
    return files
