"""Shards (selection, launcher environment), the worker pool (order, a killed worker) and shard records."""

import functools
import os
import signal

import pytest

from vqtok import corpus
from vqtok.corpus import Shard
from vqtok.errors import VqtokError

KEYS = [f"spk{i % 7}/utt{i:03d}.flac" for i in range(50)][::-1]  # not in sorted order


def test_parse_shard():
    assert corpus.parse_shard("2/5") == Shard(2, 5) and str(Shard(2, 5)) == "2/5"
    assert Shard(1, 3).tag == "00001-of-00003"
    for bad in ("5/5", "-1/3", "a/b", "3"):
        with pytest.raises(VqtokError, match="shard"):
            corpus.parse_shard(bad)


@pytest.mark.parametrize("by", corpus.SHARD_BY)
@pytest.mark.parametrize("count", [1, 3, 8])
def test_shards_partition_the_items(by, count):
    parts = [corpus.select(KEYS, Shard(i, count), by) for i in range(count)]
    taken = sorted(i for p in parts for i in p)
    assert taken == list(range(len(KEYS)))  # each item in exactly one shard
    assert all(p == sorted(p) for p in parts)  # input order inside a shard
    if by == "position":  # contiguous runs of the sorted keys, sizes within one item
        assert max(map(len, parts)) - min(map(len, parts)) <= 1
        bounds = [sorted(KEYS[i] for i in p) for p in parts if p]
        assert all(a[-1] < b[0] for a, b in zip(bounds, bounds[1:]))


def test_hash_shards_are_stable_when_items_are_added():
    before = {KEYS[i] for i in corpus.select(KEYS, Shard(1, 4), "hash")}
    more = KEYS + [f"new/{i}.wav" for i in range(20)]
    after = {more[i] for i in corpus.select(more, Shard(1, 4), "hash")}
    assert before <= after
    # a fixed value: the hash must not depend on the Python process (PYTHONHASHSEED) or version
    assert corpus.key_shard("spk0/utt000.flac", 1000) == int.from_bytes(
        __import__("hashlib").sha256(b"spk0/utt000.flac").digest()[:8], "big") % 1000


def test_shard_from_launcher_environment():
    assert corpus.shard_from_env({}) is None
    assert corpus.shard_from_env({"RANK": "0", "WORLD_SIZE": "1"}) is None
    assert corpus.shard_from_env({"RANK": "2", "WORLD_SIZE": "4"}) == (Shard(2, 4), "torchrun")
    slurm = {"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "3", "SLURM_ARRAY_TASK_MIN": "1"}
    assert corpus.shard_from_env(slurm) == (Shard(2, 3), "Slurm array")
    with pytest.raises(VqtokError, match="RANK=4 WORLD_SIZE=4"):
        corpus.shard_from_env({"RANK": "4", "WORLD_SIZE": "4"})


class Square:
    """A toy worker: x -> (x*x, pid); kills its own process the first time it sees `die_on` (a marker file says
    it happened), as `kill -9` of a worker would."""

    def __init__(self, marker=None, die_on=None):
        self.marker, self.die_on = marker, die_on

    def __call__(self, x):
        if x == self.die_on and not os.path.exists(self.marker):
            open(self.marker, "w").close()
            os.kill(os.getpid(), signal.SIGKILL)
        return x * x, os.getpid()


@pytest.mark.parametrize("workers", [1, 2])
def test_pool_results_by_index(workers):
    got = {}
    stats = corpus.run_pool(Square, list(range(12)), workers, lambda i, r: got.setdefault(i, r[0]))
    assert got == {i: i * i for i in range(12)}
    assert 1 <= len(stats.peak_rss) <= workers and stats.restarts == 0


def test_pool_survives_a_killed_worker(tmp_path):
    got, warnings = {}, []

    def keep(i, r):
        assert i not in got  # nothing twice
        got[i] = r[0]

    stats = corpus.run_pool(functools.partial(Square, str(tmp_path / "died"), 5), list(range(10)), 2, keep,
                            echo=warnings.append)
    assert got == {i: i * i for i in range(10)}  # nothing lost
    assert stats.restarts == 1 and "worker process died" in warnings[0]


def _record(folder, index, count, done, failed=(), keys=KEYS):
    planned = [KEYS[i] for i in corpus.select(keys, Shard(index, count))]
    return corpus.write_record(folder, Shard(index, count), "position", keys, planned, done,
                               {k: f"{k}: bad" for k in failed}, "npy", corpus.manifest_name(Shard(index, count)))


def test_check_shards_every_item_once(tmp_path):
    parts = [[KEYS[i] for i in corpus.select(KEYS, Shard(i, 3))] for i in range(3)]
    _record(tmp_path, 0, 3, parts[0])
    with pytest.raises(VqtokError, match="shard.s. 1/3, 2/3 not finished"):
        corpus.check_shards(tmp_path)
    _record(tmp_path, 1, 3, parts[1][1:], failed=parts[1][:1])
    _record(tmp_path, 2, 3, parts[2][:-1])
    with pytest.raises(VqtokError, match=r"shard-00002-of-00003.json: 16 of its 17 items handled"):
        corpus.check_shards(tmp_path)
    _record(tmp_path, 2, 3, parts[2])
    report = corpus.check_shards(tmp_path)
    assert report.total == 50 and len(report.done) == 49 and list(report.failed) == parts[1][:1]
    assert [m.name for m in report.manifests] == [f"manifest-0000{i}-of-00003.jsonl" for i in range(3)]
    claims = parts[2] + parts[1][-1:]  # another shard's item, as a shard run with other settings would
    corpus.write_record(tmp_path, Shard(2, 3), "hash", KEYS, claims, claims, {}, "npy", None)
    with pytest.raises(VqtokError, match="handled by both"):
        corpus.check_shards(tmp_path)
    _record(tmp_path, 2, 3, parts[2], keys=KEYS[:-1])
    with pytest.raises(VqtokError, match="same inputs"):
        corpus.check_shards(tmp_path)
