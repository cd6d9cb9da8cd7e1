"""Corpus encoding: identical codes whatever the workers, shards and format; throughput; Parquet size; faults.

    python bench/corpus.py equal  --data ../shared/data/speech -m speech-16k --work /tmp/corpus
    python bench/corpus.py equal  --mnist 2000 -m mnist --work /tmp/corpus
    python bench/corpus.py speed  --data ../shared/data/speech/train -m speech-16k
    python bench/corpus.py big    --data ../shared/data/speech/train -m speech-16k --hours 5 --work /tmp/corpus
    python bench/corpus.py faults --data ../shared/data/speech/train -m speech-16k --work /tmp/corpus

equal: one process (token files) against --workers 2, --shard 0/3 + 1/3 + 2/3 merged, --format parquet and Ray
(a local ray.init(num_cpus=2), where installed), item by item. speed: --workers 1 against --workers 2 in the same
run (items/s, real-time factor, peak memory per worker). big: the folder linked under other names until it holds
HOURS of audio, encoded to Parquet and to token files (sizes), read back by datasets and by a DataLoader over
TokenDataset. faults: one worker killed mid-run, then the whole job killed and rerun; every item once, codes equal.
Every run is a `vqtok encode` process with one torch thread per worker (OMP_NUM_THREADS=1).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def vqtok(*args, check=True) -> subprocess.CompletedProcess:
    res = subprocess.run([sys.executable, "-m", "vqtok", *map(str, args)], env=ENV, capture_output=True, text=True)
    if check and res.returncode not in (0, 1):
        sys.exit(f"vqtok {' '.join(map(str, args))} failed:\n{res.stderr[-2000:]}")
    return res


def summary(res: subprocess.CompletedProcess) -> str:
    return [line for line in res.stderr.splitlines() if "encoded" in line][-1]


def npy_codes(folder: Path) -> dict[str, list[np.ndarray]]:
    from vqtok.tokenizer.codes import read_codes

    out = {}
    for line in (folder / "manifest.jsonl").read_text().splitlines():
        entry = json.loads(line)
        out[entry["codes"].rsplit(".", 1)[0]] = read_codes(folder / entry["codes"]).levels
    return out


def parquet_codes(folder: Path) -> dict[str, list[np.ndarray]]:
    from vqtok.data.parquet import CodesParquet

    return {f.meta["id"].rsplit(".", 1)[0]: f.levels for f in CodesParquet(folder)}


def compare(name: str, reference: dict, other: dict) -> None:
    same = sum(all(np.array_equal(a, b) for a, b in zip(reference[k], other[k])) for k in reference if k in other)
    frames = sum(a.size for v in reference.values() for a in v)
    print(f"  {name:<28} {len(other):>6} items, {same:>6} identical to one process "
          f"({frames} codes compared), missing {len(set(reference) - set(other))}, extra {len(set(other) - set(reference))}")


def mnist_pngs(root: Path, n: int, folder: Path) -> Path:
    """The first n test digits as PNG files in one folder per label."""
    from PIL import Image

    if folder.is_dir() and len(list(folder.rglob("*.png"))) == n:
        return folder
    with gzip.open(root / "t10k-images-idx3-ubyte.gz") as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(root / "t10k-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)
    if len(images) < n:  # the test file holds 1,000: the rest from the training file
        with gzip.open(root / "train-images-idx3-ubyte.gz") as f:
            images = np.concatenate([images, np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)])
        with gzip.open(root / "train-labels-idx1-ubyte.gz") as f:
            labels = np.concatenate([labels, np.frombuffer(f.read(), np.uint8, offset=8)])
    for i in range(n):
        (folder / str(labels[i])).mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[i]).save(folder / str(labels[i]) / f"{i:05d}.png")
    return folder


def equal(args) -> None:
    work = Path(args.work) / "equal"
    shutil.rmtree(work, ignore_errors=True)
    data = mnist_pngs(Path(args.mnist_root), args.mnist, Path(args.work) / f"mnist{args.mnist}") if args.mnist \
        else Path(args.data)
    base = ["encode", data, "-m", args.model, "--labels", "folder" if args.mnist else "none", "--quiet",
            "--batch-size", args.batch_size]
    t = time.time()
    print(f"{data}: {summary(vqtok(*base, '-o', work / 'one'))} ({time.time() - t:.0f} s, one process)")
    reference = npy_codes(work / "one")
    t = time.time()
    vqtok(*base, "-o", work / "two", "--workers", 2)
    print(f"  --workers 2: {time.time() - t:.0f} s; manifest identical: "
          f"{(work / 'two' / 'manifest.jsonl').read_text() == (work / 'one' / 'manifest.jsonl').read_text()}")
    compare("--workers 2", reference, npy_codes(work / "two"))
    for i in range(3):
        vqtok(*base, "-o", work / "shards", "--shard", f"{i}/3")
    merged = vqtok("merge", work / "shards")
    print(f"  merge: {merged.stderr.strip().splitlines()[0]}; manifest identical: "
          f"{(work / 'shards' / 'manifest.jsonl').read_text() == (work / 'one' / 'manifest.jsonl').read_text()}")
    compare("--shard 0/3+1/3+2/3 merged", reference, npy_codes(work / "shards"))
    vqtok(*base, "-o", work / "parquet", "--format", "parquet", "--workers", 2)
    compare("--format parquet", reference, parquet_codes(work / "parquet"))
    try:
        import ray
    except ImportError:
        print("  Ray: not installed (pip install 'vqtok[ray]')")
        return
    from vqtok.integrations.ray import RayEncoder

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    files = ray.data.read_binary_files(str(data), include_paths=True)
    files.map_batches(RayEncoder, fn_constructor_kwargs={"model": args.model, "root": str(data),
                                                         "batch_size": args.batch_size},
                      compute=ray.data.ActorPoolStrategy(size=1), batch_size=16,
                      batch_format="pyarrow").write_parquet(str(work / "ray"))  # the other CPU reads
    ray.shutdown()
    compare("Ray map_batches", reference, parquet_codes(work / "ray"))


def speed(args) -> None:
    import soundfile as sf
    import torch

    from vqtok.corpus import EncodeSettings, encode_corpus
    from vqtok.pipeline import plan_runs
    from vqtok.tokenizer.checkpoint import tokenizer_file

    torch.set_num_threads(1)  # --workers 1 runs in this process: one thread, as each worker has
    data = Path(args.data)
    files = sorted(p for p in data.rglob("*") if p.suffix.lower() in (".wav", ".flac"))
    seconds = sum(sf.info(str(p)).duration for p in files)
    print(f"{data}: {len(files)} files, {seconds / 60:.1f} min; load average before: {os.getloadavg()[0]:.1f}")
    rates = {}
    for workers in args.workers:
        out = Path(args.work) / f"speed{workers}"
        shutil.rmtree(out, ignore_errors=True)
        plan = plan_runs([data], out, (".npy",), ".npy", (".wav", ".flac"), "_codes")[0]
        t = time.time()
        report = encode_corpus(plan, EncodeSettings(tokenizer_file(args.model), out), workers, progress=False)
        took = time.time() - t
        rates[workers] = len(files) / took
        peaks = ", ".join(f"{b / 2**20:.0f}" for b in sorted(report.stats.peak_rss.values()))
        print(f"  --workers {workers}: {report.done} files in {took:.1f} s = {rates[workers]:.2f} files/s, "
              f"{seconds / took:.0f}x real time; peak memory per worker process (MiB): {peaks}; "
              f"load average after: {os.getloadavg()[0]:.1f}")
    if len(rates) == 2:
        a, b = args.workers
        print(f"  --workers {b} / --workers {a}: {rates[b] / rates[a]:.2f}x")


def du(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def big(args) -> None:
    import soundfile as sf
    import torch

    from vqtok.data.tokens import TokenDataset

    data = Path(args.data).resolve()
    files = sorted(p for p in data.rglob("*") if p.suffix.lower() in (".wav", ".flac"))
    once = sum(sf.info(str(p)).duration for p in files)
    copies = int(np.ceil(args.hours * 3600 / once))
    corpus = Path(args.work) / "corpus"
    shutil.rmtree(corpus, ignore_errors=True)
    for c in range(copies):  # the same audio under other names: links, no copies
        for p in files:
            link = corpus / f"copy{c}" / p.relative_to(data)
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(p)
    print(f"{corpus}: {copies} x {data} = {len(files) * copies} files, {copies * once / 3600:.2f} h")
    out = {fmt: Path(args.work) / f"big_{fmt}" for fmt in ("parquet", "npy")}
    if args.npy_from:  # the token files of one copy, counted `copies` times: the same codes under other names
        out.pop("npy")
    for fmt, folder in out.items():
        shutil.rmtree(folder, ignore_errors=True)
        t = time.time()
        res = vqtok("encode", corpus, "-m", args.model, "-o", folder, "--format", fmt, "--workers", args.workers[-1],
                    "--labels", "none", "--quiet")
        took = time.time() - t
        print(f"  --format {fmt} --workers {args.workers[-1]}: {summary(res)}; {took:.0f} s "
              f"({copies * once / took:.0f}x real time); {du(folder) / 2**20:.1f} MiB in "
              f"{sum(1 for p in folder.rglob('*') if p.is_file())} files")
    if args.npy_from:
        npy = copies * du(Path(args.npy_from))
        print(f"  token files: {copies} x {args.npy_from} ({du(Path(args.npy_from)) / 2**20:.1f} MiB) = "
              f"{npy / 2**20:.1f} MiB")
    else:
        npy = du(out["npy"])
    print(f"  Parquet / token files: {du(out['parquet']) / npy:.3f} of the size")
    try:
        import datasets

        t = time.time()
        ds = datasets.load_dataset("parquet", data_files=str(out["parquet"] / "*.parquet"), split="train",
                                   cache_dir=str(Path(args.work) / "hf_cache"))
        n = sum(len(c[0]) for c in ds.with_format("numpy")["codes"])
        print(f"  datasets.load_dataset('parquet'): {len(ds)} rows, {n} codes, {time.time() - t:.1f} s")
    except ImportError:
        print("  datasets: not installed")
    t = time.time()
    tokens = TokenDataset(out["parquet"])
    built = time.time() - t
    loader = torch.utils.data.DataLoader(tokens, batch_size=32, shuffle=True, collate_fn=tokens.collate)
    t = time.time()
    items = codes = 0
    for batch in loader:
        items += len(batch["labels"])
        codes += int(batch["mask"].sum())
    took = time.time() - t
    print(f"  TokenDataset(parquet folder): {len(tokens)} items read in {built:.1f} s; DataLoader (batch 32, "
          f"shuffled): {items} items, {codes} codes in {took:.2f} s = {items / took:.0f} items/s, "
          f"{codes / took / 1e6:.2f} M codes/s")


def workers_of(pid: int) -> list[int]:
    """The pool's worker processes among `pid`'s children (not multiprocessing's resource tracker)."""
    found = [int(p) for p in subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()]
    return [p for p in found if b"spawn_main" in Path(f"/proc/{p}/cmdline").read_bytes()
            and b"resource_tracker" not in Path(f"/proc/{p}/cmdline").read_bytes()]


def files_done(folder: Path) -> int:
    return sum(1 for _ in folder.rglob("*.npy.json"))


def faults(args) -> None:
    data = Path(args.data)
    work = Path(args.work)
    reference = work / "speed1" if (work / "speed1" / "manifest.jsonl").is_file() else None
    cmd = [sys.executable, "-m", "vqtok", "encode", str(data), "-m", args.model, "--workers", "2", "--labels", "none",
           "--quiet"]
    total = sum(1 for p in data.rglob("*") if p.suffix.lower() in (".wav", ".flac"))
    for case in ("one worker", "whole job"):
        out = work / f"fault_{case.replace(' ', '_')}"
        shutil.rmtree(out, ignore_errors=True)
        job = subprocess.Popen(cmd + ["-o", str(out)], env=ENV, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
        while not out.exists() or files_done(out) < total // 3:
            time.sleep(0.2)
        before = files_done(out)
        if case == "one worker":
            victim = workers_of(job.pid)[-1]
            os.kill(victim, signal.SIGKILL)
            _, err = job.communicate()
            print(f"{case}: killed worker {victim} with {before}/{total} files written; the run went on: "
                  f"{[x for x in err.splitlines() if 'warning' in x or 'encoded' in x]}")
        else:
            os.killpg(job.pid, signal.SIGKILL)
            job.wait()
            print(f"{case}: killed the job (SIGKILL to its process group) with {before}/{total} files written; "
                  f"manifest written: {(out / 'manifest.jsonl').exists()}, leftover temporary files: "
                  f"{sum(1 for _ in out.rglob('*.tmp'))}")
        rerun = vqtok("encode", data, "-m", args.model, "-o", out, "--workers", 2, "--labels", "none", "--quiet")
        lines = (out / "manifest.jsonl").read_text().splitlines()
        keys = [json.loads(x)["codes"] for x in lines]
        print(f"  rerun: {summary(rerun)}; manifest {len(lines)} lines, {len(set(keys))} distinct, of {total} inputs")
        if reference is not None:
            print(f"  manifest identical to an uninterrupted run's: "
                  f"{(out / 'manifest.jsonl').read_text() == (reference / 'manifest.jsonl').read_text()}")
            compare("codes", npy_codes(reference), npy_codes(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["equal", "speed", "big", "faults"])
    parser.add_argument("--data", default="../shared/data/speech")
    parser.add_argument("--mnist", type=int, default=0, help="equal: this many MNIST digits as PNGs instead of --data")
    parser.add_argument("--mnist-root", default="../shared/data/mnist")
    parser.add_argument("-m", "--model", default="speech-16k")
    parser.add_argument("--work", default="/tmp/vqtok-corpus")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--hours", type=float, default=5.0)
    parser.add_argument("--npy-from", help="big: the token-file folder of --data (its size stands for each copy's) "
                                           "instead of encoding the corpus a second time")
    args = parser.parse_args()
    Path(args.work).mkdir(parents=True, exist_ok=True)
    {"equal": equal, "speed": speed, "big": big, "faults": faults}[args.what](args)


if __name__ == "__main__":
    main()
