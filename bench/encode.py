"""Tokenizer speed on one CPU thread: load time and encode/decode real-time factors; streaming memory and code identity.

    python bench/encode.py [-m RUN_OR_FILE ...] [--seconds 10] [--threads 1]
    python bench/encode.py --streaming [-m RUN_OR_FILE] [--minutes 10] [--chunks 1 7] [--plain]

Default: for each model, in a fresh process (so nothing is cached from another model), the wall time of
`load_tokenizer`, then the CPU time (`time.process_time`, one torch thread) of encoding and decoding a
SECONDS-long piece of real speech (the first files of ../shared/data/speech/test joined, read at the
model's rate), in one `Tokenizer.encode` / `decode` call and block-wise as `vqtok encode` / `decode` run
(`encode_long` / `decode_long`). Real-time factor = seconds of audio / CPU seconds (best of --repeat,
after one warm-up). CPU time, not wall time: on a shared machine a descheduled thread inflates wall
times, not CPU times. CPU times still swing with what the other cores do (shared caches and memory), so
--rounds runs every model's process that many times, interleaved (A B A B ...), and reports the median
round with the range of rounds beside it.

--streaming (the first model): builds a MINUTES-long 8 kHz WAV by concatenating FSDD recordings, then in a
fresh process per setting (so `ru_maxrss` is that setting's peak) encodes it the way `vqtok encode` does
(AudioStream pieces -> block-wise `stream_encode`) and decodes the codes back, at each --chunks size in
seconds and whole-file (chunk 0: the file read at once). Prints real-time factors and peak RSS and checks
that every setting gives the same codes. --plain also runs `Tokenizer.encode` on the whole file in one call.

Without -m (and no runs/speech/tokenizer.safetensors) the model of recipes/speech.yaml is built and its
codebook initialised by k-means on real FSDD encoder outputs (one training forward), which is enough to
measure speed and memory and to make near-ties as frequent as in a trained model.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing
FSDD = REPO.parent / "shared" / "data" / "fsdd" / "recordings"
SPEECH = REPO.parent / "shared" / "data" / "speech" / "test"
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


def build_speech_piece(path: Path, seconds: float, folder: Path, rate: int = 16000) -> None:
    """The first files of ``folder`` (sorted) at ``rate``, joined and cut to ``seconds``, as a float WAV."""
    import soundfile as sf

    from vqtok.data.audio import list_audio_files, load_audio

    target = round(seconds * rate)
    pieces, total = [], 0
    for file in list_audio_files(folder):
        pieces.append(load_audio(file, rate)[0])
        total += len(pieces[-1])
        if total >= target:
            break
    if total < target:
        raise SystemExit(f"{folder}: {total / rate:.1f} s of audio in all, under the {seconds:g} s asked for")
    sf.write(path, np.concatenate(pieces)[:target], rate, subtype="FLOAT")


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


def best_cpu(fn, repeat: int) -> float:
    """Least CPU seconds of ``repeat`` calls of ``fn`` (one warm-up call first, not counted)."""
    fn()
    times = []
    for _ in range(repeat):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return min(times)


def speed_worker(args) -> None:
    """One model in this process: load time, then encode/decode CPU times; prints one JSON line."""
    import torch

    from vqtok.data.audio import load_audio
    from vqtok.tokenizer.checkpoint import load_tokenizer, tokenizer_file

    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    tok = load_tokenizer(tokenizer_file(args.model))
    load_s = time.perf_counter() - start
    if tok.sample_rate is None:
        raise SystemExit(f"{args.model}: an image tokenizer; pass a speech tokenizer")
    wav = load_audio(args.wav, tok.sample_rate)[0]  # (T,)
    x = torch.from_numpy(wav)[None, None]  # (1, 1, T)
    with torch.no_grad():
        codes = tok.encode(x)
        long_codes = tok.encode_long(wav)
        result = {
            "model": str(args.model), "rate": tok.sample_rate, "bitrate": tok.bitrate,
            "seconds": len(wav) / tok.sample_rate, "params": sum(p.numel() for p in tok.parameters()), "load_s": load_s,
            "encode_cpu": best_cpu(lambda: tok.encode(x), args.repeat),
            "decode_cpu": best_cpu(lambda: tok.decode(codes, size=len(wav)), args.repeat),
            "encode_long_cpu": best_cpu(lambda: tok.encode_long(wav), args.repeat),
            "decode_long_cpu": best_cpu(lambda: tok.decode_long(long_codes, size=len(wav)), args.repeat),
        }
    print(json.dumps(result))


def streaming_worker(args) -> None:
    """One streaming setting in this process: encode + decode, print a JSON line with times and peak RSS."""
    import torch

    from vqtok.data.stream import AudioStream
    from vqtok.tokenizer import streaming
    from vqtok.tokenizer.checkpoint import load_tokenizer, tokenizer_file

    torch.set_num_threads(args.threads)
    tok = load_tokenizer(tokenizer_file(args.model))
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


def child(cmd: list[str], what: str) -> str:
    """Run a worker process; its stdout, or exit naming ``what`` failed with the worker's error."""
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"{what}: worker failed\n{result.stderr.strip().splitlines()[-1] if result.stderr else ''}")
    lines = result.stdout.strip().splitlines()
    return lines[-1] if lines else ""


def speed_table(models: list[Path], args, tmp: Path) -> None:
    wav = tmp / "piece.wav"
    child([sys.executable, __file__, "--prepare-piece", "--wav", str(wav), "--seconds", str(args.seconds),
           "--speech", str(args.speech)], "preparing the speech piece")
    print(f"input: {args.seconds:g} s of {args.speech.resolve()} (first files, joined), read at each model's rate; "
          f"{args.threads} torch thread(s); CPU time, best of {args.repeat}\n")
    rounds: dict[Path, list[dict]] = {model: [] for model in models}
    for i in range(args.rounds):  # interleaved, so a busy spell on the machine hits every model alike
        for model in models:
            cmd = [sys.executable, __file__, "--worker", "--mode", "speed", "--wav", str(wav), "-m", str(model),
                   "--threads", str(args.threads), "--repeat", str(args.repeat)]
            rounds[model].append(json.loads(child(cmd, str(model))))
        print(f"round {i + 1} of {args.rounds} done", file=sys.stderr, flush=True)
    spread = f", median of {args.rounds} rounds (range)" if args.rounds > 1 else ""
    print(f"real-time factors{spread}\n")
    cols = ["model", "rate", "kbit/s", "params", "load s", "encode RTF", "decode RTF", "encode_long RTF",
            "decode_long RTF"]
    print(f"| {' | '.join(cols)} |")
    print("|---|" + "---:|" * (len(cols) - 1))
    for model, runs in rounds.items():
        r = runs[0]
        rtf = []
        for key in ("encode_cpu", "decode_cpu", "encode_long_cpu", "decode_long_cpu"):
            factors = [run["seconds"] / run[key] for run in runs]
            cell = f"{statistics.median_low(factors):.0f}x"  # a measured round, not a mean of two
            rtf.append(cell + (f" ({min(factors):.0f}-{max(factors):.0f})" if len(factors) > 1 else ""))
        load_s = statistics.median_low(run["load_s"] for run in runs)
        name = model.parent.name if model.name == "tokenizer.safetensors" else model.name
        print(f"| {name} | {r['rate'] / 1000:g} kHz | {r['bitrate'] / 1000:.2f} | {r['params'] / 1e6:.2f} M | "
              f"{load_s:.2f} | {' | '.join(rtf)} |", flush=True)


def streaming_table(model: Path, args, tmp: Path) -> None:
    wav = tmp / "long.wav"
    seconds = float(child([sys.executable, __file__, "--prepare", "--wav", str(wav), "--minutes", str(args.minutes),
                           "--fsdd", str(args.fsdd)], "preparing the long file"))
    print(f"input: {seconds / 60:.1f} min of FSDD recordings at 8 kHz, {args.threads} torch thread(s)\n")
    modes = [f"{c:g}" for c in args.chunks] + ["0"] + (["plain"] if args.plain else [])
    rows, codes = [], {}
    for mode in modes:
        out = tmp / f"codes_{mode}.npy"
        cmd = [sys.executable, __file__, "--worker", "--mode", mode, "--wav", str(wav), "--codes-out", str(out),
               "-m", str(model), "--threads", str(args.threads)]
        rows.append(json.loads(child(cmd, mode)))
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-m", "--model", type=Path, action="extend", nargs="+", default=[],
                        help="tokenizer run folders or files (repeatable)")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the speech piece")
    parser.add_argument("--repeat", type=int, default=3, help="timed calls per measurement (the least counts)")
    parser.add_argument("--rounds", type=int, default=3, help="fresh processes per model, interleaved (median)")
    parser.add_argument("--speech", type=Path, default=SPEECH, help="folder the speech piece is taken from")
    parser.add_argument("--streaming", action="store_true", help="the long-file memory and code-identity table")
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
    parser.add_argument("--prepare-piece", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        args.model = args.model[0]
        if args.mode == "speed":
            speed_worker(args)
        else:
            streaming_worker(args)
        return
    if args.prepare_piece:
        build_speech_piece(Path(args.wav), args.seconds, args.speech)
        return
    if args.prepare:
        if args.model:
            build_speech_sized(args.model[0], args.fsdd)
        print(build_long_wav(Path(args.wav), args.minutes, args.fsdd))
        return

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        models = args.model or ([DEFAULT_TOKENIZER] if DEFAULT_TOKENIZER.is_file() else [])
        if not models:
            # Built in its own process: a child inherits its parent's peak RSS through fork, so the
            # parent stays small for the workers' ru_maxrss to be their own.
            models = [tmp / "speech_sized.safetensors"]
            child([sys.executable, __file__, "--prepare", "--wav", str(tmp / "unused.wav"), "--minutes", "0.01",
                   "--fsdd", str(args.fsdd), "-m", str(models[0])], "building the speech.yaml model")
            print("tokenizer: recipes/speech.yaml model, freshly built (k-means codebook init on FSDD, no training)")
        if args.streaming:
            print(f"tokenizer: {models[0]}")
            streaming_table(models[0], args, tmp)
        else:
            speed_table(models, args, tmp)


if __name__ == "__main__":
    main()
