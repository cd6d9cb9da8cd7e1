"""Encode/decode speed (real-time factor) and peak memory on a long file, and code identity across chunk sizes.

    python bench/encode.py [-m runs/speech/tokenizer.safetensors] [--minutes 10] [--chunks 1 7] [--plain]

Builds a MINUTES-long 8 kHz WAV by concatenating FSDD recordings (sorted, repeated as needed), then in
a fresh process per setting (so `ru_maxrss` is that setting's peak) encodes it the way `vqtok encode`
does (AudioStream pieces -> block-wise `stream_encode`) and decodes the codes back (`decode_long`), at
each --chunks size in seconds and whole-file (chunk 0: the file read at once). Prints a table of
real-time factors (seconds of audio per second of wall time) and peak RSS, and checks that every
setting gives the same codes. --plain also runs `Tokenizer.encode` on the whole file in one call (no
blocks), reporting its memory and how many frames differ from the block-wise codes.

Without -m (and no runs/speech/tokenizer.safetensors) the model of recipes/speech.yaml is built and its codebook
initialised by k-means on real FSDD encoder outputs (one training forward), which is enough to measure
speed and memory and to make near-ties as frequent as in a trained model.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
FSDD = REPO.parent / "shared" / "data" / "fsdd" / "recordings"
DEFAULT_TOKENIZER = REPO / "runs" / "speech" / "tokenizer.safetensors"


def build_long_wav(path: Path, minutes: float, fsdd: Path) -> float:
    import soundfile as sf

    files = sorted(fsdd.glob("*.wav"))
    if not files:
        raise SystemExit(f"{fsdd}: no FSDD recordings")
    target = int(minutes * 60 * 8000)
    pieces, total, i = [], 0, 0
    while total < target:
        x, sr = sf.read(files[i % len(files)], dtype="float32")
        assert sr == 8000
        pieces.append(x)
        total += len(x)
        i += 1
    wav = np.concatenate(pieces)[:target]
    sf.write(path, wav, 8000, subtype="PCM_16")
    return len(wav) / 8000


def build_speech_sized(path: Path, fsdd: Path) -> None:
    import soundfile as sf
    import torch

    from vqtok.tokenizer.recipe import load_recipe
    from vqtok.tokenizer import build_tokenizer, save_tokenizer

    torch.manual_seed(0)
    tok = build_tokenizer(load_recipe(REPO / "recipes" / "speech.yaml").model)
    clips = [sf.read(f, dtype="float32")[0] for f in sorted(fsdd.glob("*.wav"))[::50][:32]]
    seg = 4000
    batch = torch.stack([torch.from_numpy(np.pad(c, (0, max(0, seg - len(c))))[:seg]) for c in clips])[:, None]
    tok.train()(batch)  # k-means codebook init on real encoder outputs
    save_tokenizer(tok.eval(), path, train_info={"recipe": "speech (bench: k-means init only)", "step": 0})


def worker(args) -> None:
    """One setting in this process: encode + decode, print a JSON line with times and peak RSS."""
    import torch

    from vqtok import load_tokenizer
    from vqtok.data.stream import AudioStream
    from vqtok.tokenizer import streaming

    torch.set_num_threads(args.threads)
    tok = load_tokenizer(args.model)
    base_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    stream = AudioStream(args.wav, tok.sample_rate)
    seconds = stream.length / tok.sample_rate
    cpu = time.process_time
    if args.mode == "plain":
        t0, c0 = time.perf_counter(), cpu()
        with torch.no_grad():
            codes = tok.encode(torch.from_numpy(stream.read()))
        enc, enc_cpu = time.perf_counter() - t0, cpu() - c0
        dec = dec_cpu = float("nan")
    else:
        chunk = float(args.mode)
        frames = stream.info.orig_frames if chunk == 0 else round(chunk * stream.info.orig_sample_rate)
        t0, c0 = time.perf_counter(), cpu()
        parts = list(streaming.stream_encode(tok, stream.pieces(frames)))
        codes = torch.from_numpy(streaming.join_levels(parts, tok.levels)[-1])
        enc, enc_cpu = time.perf_counter() - t0, cpu() - c0
        t0, c0 = time.perf_counter(), cpu()
        for _ in streaming.stream_decode(tok, [codes.numpy()], stream.length,
                                         None if chunk == 0 else max(1, round(chunk * tok.sample_rate / tok.hop))):
            pass
        dec, dec_cpu = time.perf_counter() - t0, cpu() - c0
    np.save(args.codes_out, codes.cpu().numpy().astype(np.int32))
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"mode": args.mode, "seconds": seconds, "encode_s": enc, "decode_s": dec, "encode_cpu": enc_cpu,
                      "decode_cpu": dec_cpu, "base_mb": base_mb, "peak_mb": peak_mb}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-m", "--model", type=Path, default=None)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--chunks", type=float, nargs="+", default=[1.0, 7.0])
    parser.add_argument("--plain", action="store_true", help="also Tokenizer.encode on the whole file at once")
    # One thread by default: on a shared machine, OpenMP threads waiting for a descheduled sibling
    # make wall times of many small convolutions (blocks) swing by 5x; CPU time is reported too.
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--fsdd", type=Path, default=FSDD)
    # internal: one measurement in a fresh process
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    parser.add_argument("--wav", help=argparse.SUPPRESS)
    parser.add_argument("--codes-out", help=argparse.SUPPRESS)
    parser.add_argument("--prepare", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    if args.prepare:
        if args.model is not None:
            build_speech_sized(args.model, args.fsdd)
        print(build_long_wav(Path(args.wav), args.minutes, args.fsdd))
        return

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = args.model or (DEFAULT_TOKENIZER if DEFAULT_TOKENIZER.is_file() else None)
        wav = tmp / "long.wav"
        # Preparation runs in its own process: a child inherits its parent's peak RSS through fork,
        # so the parent stays small for the workers' ru_maxrss to be their own.
        prep = [sys.executable, __file__, "--prepare", "--wav", str(wav), "--minutes", str(args.minutes),
                "--fsdd", str(args.fsdd)]
        if model is None:
            model = tmp / "speech_sized.safetensors"
            prep += ["-m", str(model)]
            print("tokenizer: recipes/speech.yaml model, freshly built (k-means codebook init on FSDD, no training)")
        else:
            print(f"tokenizer: {model}")
        seconds = float(subprocess.run(prep, capture_output=True, text=True, check=True).stdout.strip())
        print(f"input: {seconds / 60:.1f} min of FSDD recordings at 8 kHz, {args.threads} torch thread(s)\n")
        modes = [f"{c:g}" for c in args.chunks] + ["0"] + (["plain"] if args.plain else [])
        rows, codes = [], {}
        for mode in modes:
            out = tmp / f"codes_{mode}.npy"
            cmd = [sys.executable, __file__, "--worker", "--mode", mode, "--wav", str(wav), "--codes-out", str(out),
                   "-m", str(model), "--threads", str(args.threads)]
            result = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if result.returncode != 0:
                raise SystemExit(f"{mode}: worker failed\n{result.stderr}")
            rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
            codes[mode] = np.load(out)
        print(f"| {'setting':<24} | {'encode s':>8} | {'encode RTF':>10} | {'encode CPU s':>12} | {'decode s':>8} "
              f"| {'decode RTF':>10} | {'decode CPU s':>12} | {'RSS after load MB':>17} | {'peak RSS MB':>11} |")
        print("|" + "|".join("-" * (w + 2) for w in [24, 8, 10, 12, 8, 10, 12, 17, 11]) + "|")
        for row in rows:
            mode = row["mode"]
            name = {"0": "whole file (blocks)", "plain": "Tokenizer.encode, 1 call"}.get(mode, f"--chunk-seconds {mode}")
            nan = row["decode_s"] != row["decode_s"]
            dec = "-" if nan else f"{row['decode_s']:.1f}"
            dec_rtf = "-" if nan else f"{row['seconds'] / row['decode_s']:.0f}x"
            dec_cpu = "-" if nan else f"{row['decode_cpu']:.1f}"
            print(f"| {name:<24} | {row['encode_s']:>8.1f} | {row['seconds'] / row['encode_s']:>9.0f}x | "
                  f"{row['encode_cpu']:>12.1f} | {dec:>8} | {dec_rtf:>10} | {dec_cpu:>12} | {row['base_mb']:>17.0f} | "
                  f"{row['peak_mb']:>11.0f} |")
        ref = codes["0"]
        print()
        for mode, c in codes.items():
            if mode == "0":
                continue
            same = np.array_equal(c, ref)
            diff = int((c != ref).sum()) if c.shape == ref.shape else -1
            print(f"codes {mode:>6} vs whole file (blocks): {'identical' if same else f'{diff} of {ref.size} frames differ'}"
                  f" ({ref.size} frames)")


if __name__ == "__main__":
    main()
