"""Corpus runs: the items a shard takes, a pool of worker processes, and the shard records `vqtok merge` checks.

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
import hashlib
import json
import logging
import multiprocessing
import os
import resource
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vqtok.errors import VqtokError
from vqtok.files import atomic_write_text

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
                       [folder / f for r in records for f in r.get("files", [])])
