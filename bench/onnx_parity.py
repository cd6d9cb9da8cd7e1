"""onnxruntime against torch for every shipped tokenizer, one CPU thread each: codes, decoded output, speed, sizes.

Audio models: speech/test files (resampled to the model's rate, at their own level), encoded block-wise by both
(`Tokenizer.encode_long` and ort_runner's canonical blocks), decoded block-wise from torch's codes through the
postfilter (`decode_long` against the decoder and postfilter graphs). mnist: the 1,000 digits of t10k, 100 at a
time. Prints per model: export time, graph sizes, the share of identical codes (and, over the frames that differ,
how far the latent lies from the boundary between the two codes' cells, the largest, as a fraction of its norm),
the SNR of onnxruntime's output against torch's, and each side's time (and the ratio torch / onnxruntime: above 1, onnxruntime is faster).

    python bench/onnx_parity.py [--files 0] [--models speech-16k speech-8k fsdd mnist]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from vqtok import load_tokenizer
from vqtok.data.audio import load_audio
from vqtok.data.mnist import load_mnist
from vqtok.integrations.onnx import export_onnx
from vqtok.integrations.ort_runner import OrtTokenizer
from vqtok.tokenizer.streaming import canonical_windows

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
MODELS = ("speech-16k", "speech-8k", "fsdd", "mnist")


def snr_db(ref: np.ndarray, out: np.ndarray) -> float:
    noise = float(np.sum((ref.astype(np.float64) - out) ** 2))
    return float("inf") if noise == 0 else 10 * np.log10(float(np.sum(ref.astype(np.float64) ** 2)) / noise)


def tie_gap(tok, latent: torch.Tensor, a: int, b: int) -> float:
    """How far a latent (D,) lies from the boundary between the cells of codes a and b, as a fraction of its norm
    (fp64): |d_a - d_b| / (2 |e_a - e_b| |z|), the distance to the bisecting hyperplane (quantizer._refine's)."""
    cb = tok.quantizer.codebook.double()
    z = latent.double()
    da, db = float(((z - cb[a]) ** 2).sum()), float(((z - cb[b]) ** 2).sum())
    return abs(da - db) / max(2 * float((cb[a] - cb[b]).norm()) * float(z.norm()), 1e-300)


def audio_gaps(tok, x: np.ndarray, ref: np.ndarray, codes: np.ndarray) -> list[float]:
    """tie_gap of every frame where the codes differ, the latent taken from the frame's canonical window."""
    gaps = []
    padded = np.pad(x, (0, (-len(x)) % tok.hop))
    for j in np.flatnonzero(ref != codes):
        for a, b, start, stop in canonical_windows(tok, len(x)):
            if start <= j < stop:
                with torch.no_grad():
                    z = tok.encoder(torch.from_numpy(padded[a:b]).reshape(1, 1, -1))[0]  # (D, frames)
                gaps.append(tie_gap(tok, z[:, j - a // tok.hop], int(ref[j]), int(codes[j])))
    return gaps


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def audio_rows(tok, ort: OrtTokenizer, files: list[Path]) -> dict:
    same = frames = 0
    t = {"torch_enc": 0.0, "ort_enc": 0.0, "torch_dec": 0.0, "ort_dec": 0.0}
    signal = noise = 0.0
    raw_signal = raw_noise = 0.0
    seconds = 0.0
    gaps: list[float] = []
    for f in files:
        x = load_audio(f, tok.sample_rate)[0]
        seconds += len(x) / tok.sample_rate
        ref, dt = timed(lambda: tok.encode_long(x).numpy())
        t["torch_enc"] += dt
        (codes,), dt = timed(lambda: ort.encode(x))
        t["ort_enc"] += dt
        same += int((codes == ref).sum())
        frames += ref.size  # codes: frames, or frames x codebooks of a multi-codebook tokenizer
        if ref.ndim == 1:  # the boundary distance is a single codebook's; a residual stage's input moves with the last
            gaps += audio_gaps(tok, x, ref, codes)
        else:
            gaps = None
        with torch.no_grad():
            y_ref, dt = timed(lambda: tok.decode_long(torch.from_numpy(ref), size=len(x))[0].numpy())
        t["torch_dec"] += dt
        y, dt = timed(lambda: ort.decode([ref], len(x)))
        t["ort_dec"] += dt
        signal += float(np.sum(y_ref.astype(np.float64) ** 2))
        noise += float(np.sum((y_ref.astype(np.float64) - y) ** 2))
        with torch.no_grad():  # the decoder graph alone, without the postfilter
            raw = tok.decode_long(torch.from_numpy(ref), size=len(x), postfilter=False)[0].numpy()
        raw_ort = ort.decode([ref], len(x), postfilter=False)
        raw_signal += float(np.sum(raw.astype(np.float64) ** 2))
        raw_noise += float(np.sum((raw.astype(np.float64) - raw_ort) ** 2))
    return {"same": same, "frames": frames, "gap": None if gaps is None else max(gaps, default=0.0),
            "snr": 10 * np.log10(signal / max(noise, 1e-300)),
            "snr_raw": 10 * np.log10(raw_signal / max(raw_noise, 1e-300)), "seconds": seconds, **t}


def image_rows(tok, ort: OrtTokenizer, images: np.ndarray, batch: int = 100) -> dict:
    x = (images.astype(np.float32) / 255.0)[:, None]  # (N, 1, 28, 28), as load_image reads a PNG
    t = {"torch_enc": 0.0, "ort_enc": 0.0, "torch_dec": 0.0, "ort_dec": 0.0}
    same, signal, noise = 0, 0.0, 0.0
    gaps: list[float] = []
    for s in range(0, len(x), batch):
        xb = x[s : s + batch]
        ref, dt = timed(lambda: tok.encode(torch.from_numpy(xb)).numpy())
        t["torch_enc"] += dt
        codes, dt = timed(lambda: ort.encoder.run(None, {"input": xb})[0])
        t["ort_enc"] += dt
        same += int((codes == ref).sum())
        for i, h, w in zip(*np.nonzero(codes != ref)):
            with torch.no_grad():
                z = tok.encoder(torch.from_numpy(xb[i : i + 1]))[0, :, h, w]  # (D,)
            gaps.append(tie_gap(tok, z, int(ref[i, h, w]), int(codes[i, h, w])))
        with torch.no_grad():
            y_ref, dt = timed(lambda: tok.decode(torch.from_numpy(ref)).numpy())
        t["torch_dec"] += dt
        y, dt = timed(lambda: ort.decoder.run(None, {"codes": ref})[0])
        t["ort_dec"] += dt
        signal += float(np.sum(y_ref.astype(np.float64) ** 2))
        noise += float(np.sum((y_ref.astype(np.float64) - y) ** 2))
    frames = len(x) * 7 * 7
    snr = 10 * np.log10(signal / max(noise, 1e-300))
    return {"same": same, "frames": frames, "gap": max(gaps, default=0.0), "snr": snr, "snr_raw": snr, **t}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=0, help="speech/test files (sorted by name); 0: all")
    parser.add_argument("--digits", type=int, default=1000)
    parser.add_argument("--models", nargs="*", default=list(MODELS))
    args = parser.parse_args()
    torch.set_num_threads(1)
    files = sorted((DATA / "speech" / "test").rglob("*.flac"))
    files = files[: args.files] if args.files else files
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            tok = load_tokenizer(name)
            written, export_s = timed(lambda: export_onnx(tok, Path(tmp) / name))
            sizes = {g: p.stat().st_size / 1e6 for g, p in written.items() if p.suffix == ".onnx"}
            ort = OrtTokenizer(Path(tmp) / name, threads=1)
            if tok.dims == 1:
                row = audio_rows(tok, ort, files)
                what = f"{len(files)} speech/test files ({row['seconds'] / 60:.1f} min)"
            else:
                row = image_rows(tok, ort, load_mnist(DATA / "mnist", "test")[0][: args.digits])
                what = f"{args.digits} t10k digits"
            rows.append({"model": name, "what": what, "export_s": export_s, "sizes": sizes, **row})
            print(f"{name}: done", flush=True)
    print(f"\nonnxruntime {__import__('onnxruntime').__version__}, torch {torch.__version__}, one thread\n")
    print("| model | input | graphs (MB) | export | identical codes | SNR decoded (no postfilter) "
          "| encode torch / ort | decode torch / ort |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        sizes = ", ".join(f"{g} {s:.2f}" for g, s in r["sizes"].items())
        print(f"| {r['model']} | {r['what']} | {sizes} | {r['export_s']:.0f} s "
              f"| {100 * r['same'] / r['frames']:.4f}% ({r['frames'] - r['same']} of {r['frames']:,} differ; "
              + ("codes of all stages) " if r["gap"] is None else f"boundary within {r['gap']:.0e}) ")
              + f"| {r['snr']:.1f} dB ({r['snr_raw']:.1f} dB) "
              f"| {r['torch_enc']:.2f} s / {r['ort_enc']:.2f} s ({r['torch_enc'] / r['ort_enc']:.2f}x) "
              f"| {r['torch_dec']:.2f} s / {r['ort_dec']:.2f} s ({r['torch_dec'] / r['ort_dec']:.2f}x) |")


if __name__ == "__main__":
    main()
