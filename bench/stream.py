"""Live coding speed: speech/test files streamed in 20 ms chunks through each shipped audio tokenizer's
StreamEncoder and StreamDecoder (stream.py), one CPU thread, each model in its own process.

Prints per model: codes identical to the offline `encode_long` (what `vqtok encode` writes), the stream decoder's
largest difference from `decode` (relative to the peak), the real-time factor (compute seconds per audio second;
below 1 keeps up with live audio) of encoding and of decoding, the slowest chunk (encode + decode), the
algorithmic latency (right context + one hop; decode with the postfilter's window), and the process's peak memory above what it held before streaming.

    python bench/stream.py [--files 10] [--chunk-ms 20]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "speech" / "test"
MODELS = ("speech-16k", "speech-8k", "fsdd")


def rss_kib() -> int:
    """Resident memory now, KiB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() // 1024


def run_model(name: str, files: list[Path], chunk_ms: float, out) -> None:
    import numpy as np
    import torch

    from vqtok import load_tokenizer
    from vqtok.data.audio import load_audio

    torch.set_num_threads(1)
    tok = load_tokenizer(name)
    clips = [load_audio(f, tok.sample_rate)[0] for f in files]
    step = round(chunk_ms / 1000 * tok.sample_rate)
    # warm up oneDNN's kernels for the chunk shapes before anything is timed
    enc = tok.stream_encoder()
    [enc.push(clips[0][i : i + step]) for i in range(0, min(len(clips[0]), 20 * step), step)]
    base = rss_kib()
    enc_s = dec_s = worst = 0.0
    results = []
    for x in clips:
        enc, dec = tok.stream_encoder(), tok.stream_decoder()
        codes, audio = [], []
        for i in range(0, len(x), step):
            t0 = time.perf_counter()
            c = enc.push(x[i : i + step])
            t1 = time.perf_counter()
            audio.append(dec.push(c))
            t2 = time.perf_counter()
            codes.append(c)
            enc_s, dec_s, worst = enc_s + t1 - t0, dec_s + t2 - t1, max(worst, t2 - t0)
        t0 = time.perf_counter()
        codes.append(enc.flush())
        t1 = time.perf_counter()
        audio += [dec.push(codes[-1]), dec.flush()]
        enc_s, dec_s = enc_s + t1 - t0, dec_s + time.perf_counter() - t1
        results.append((torch.cat(codes), torch.cat(audio).numpy()))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, before the offline runs below
    same = frames = 0
    err = 0.0
    for x, (streamed, y) in zip(clips, results):
        offline = tok.encode_long(x)
        same += int((streamed == offline).sum())
        frames += len(offline)
        with torch.no_grad():
            ref = tok.decode(streamed)[0].numpy()
        err = max(err, float(np.abs(y - ref).max() / max(np.abs(ref).max(), 1e-9)))
    seconds = sum(len(x) for x in clips) / tok.sample_rate
    out.put({"model": name, "same": same, "frames": frames, "err": err, "enc_rtf": enc_s / seconds,
             "dec_rtf": dec_s / seconds, "worst_ms": 1000 * worst, "chunk_ms": 1000 * step / tok.sample_rate,
             "enc_latency_ms": 1000 * tok.stream_encoder().latency,
             "dec_latency_ms": 1000 * tok.stream_decoder().latency,
             "peak_mib": max(0, peak - base) / 1024, "seconds": seconds})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=10, help="speech/test files (sorted by name), 0: all")
    parser.add_argument("--chunk-ms", type=float, default=20.0)
    parser.add_argument("--models", nargs="*", default=list(MODELS))
    args = parser.parse_args()
    files = sorted(DATA.rglob("*.flac"))
    files = files[: args.files] if args.files else files
    ctx = mp.get_context("spawn")
    rows = []
    for name in args.models:
        queue = ctx.Queue()
        proc = ctx.Process(target=run_model, args=(name, files, args.chunk_ms, queue))
        proc.start()
        proc.join()
        if proc.exitcode != 0:
            raise SystemExit(f"{name}: the benchmark process failed (exit code {proc.exitcode})")
        rows.append(queue.get())
    print(f"{len(files)} speech/test files, {rows[0]['seconds']:.1f} s, {args.chunk_ms:g} ms chunks, one thread\n")
    print("| model | identical codes | decode max diff | RTF encode | RTF decode | slowest chunk "
          "| latency encode / decode | peak memory |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {100 * r['same'] / r['frames']:.3f}% of {r['frames']} | {r['err']:.1e} "
              f"| {r['enc_rtf']:.3f} | {r['dec_rtf']:.3f} | {r['worst_ms']:.1f} ms "
              f"| {r['enc_latency_ms']:.1f} / {r['dec_latency_ms']:.1f} ms | {r['peak_mib']:.0f} MiB |")


if __name__ == "__main__":
    main()
