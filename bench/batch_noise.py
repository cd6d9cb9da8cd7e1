"""Batched against alone encoding: how far batching moves the encoder's latents, and what encode_batch costs.

    python bench/batch_noise.py [-m speech-16k speech-8k mnist] [--n 100] [--batch 8] [--device cpu]

For each model, the items (audio: the first N utterances of ../shared/data/speech/test at the model's rate and
speech level; images: the first N MNIST test digits) are cut into the windows `encode_batch` codes (4 s blocks
with their context for audio, whole images), then:
- latent noise: each window's encoder output computed in batches of --batch (padding masked, as encode_batch
  does) against the window alone, |z_batched - z_alone| / |z_alone| per frame (max, 99.99th percentile, median).
  streaming.LATENT_RTOL must stay above the max on each device; on a CPU it is 1e-5;
- near a boundary: the share of frames whose latent lies within LATENT_RTOL of its code cell's boundary, and of
  windows holding one (they are re-encoded alone);
- speed: encode_batch against encoding each item alone (CPU seconds on a CPU, wall seconds on a GPU), and whether
  the codes are equal.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from vqtok.codec import Codec
from vqtok.data import load_audio
from vqtok.data.mnist import load_mnist
from vqtok.tokenizer import load_tokenizer, streaming
from vqtok.tokenizer.checkpoint import tokenizer_file
from vqtok.tokenizer.quantizer import nearest_codes

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def load_items(tok, n: int) -> list[torch.Tensor]:
    """Audio clips (T,) at the model's speech level, or images (1, 28, 28) in [0, 1]."""
    if tok.dims == 1:
        files = sorted((DATA / "speech" / "test").rglob("*.flac"))[:n]
        codec = Codec(tok)  # at the model's speech level, as vqtok encode brings a file
        return [torch.from_numpy(codec.prepare(load_audio(f, tok.sample_rate)[0]).data) for f in files]
    images, _ = load_mnist(DATA / "mnist", "test")
    return list(torch.from_numpy(images[:n]).float()[:, None] / 255)


@torch.no_grad()
def latent_noise(tok, windows: list[torch.Tensor], batch: int, rtol: float) -> dict:
    """Relative latent differences batched vs alone, and frames / windows within rtol of a cell boundary."""
    device = tok.device
    rel, frames_near, windows_near = [], 0, 0
    for s in range(0, len(windows), batch):
        chunk = windows[s : s + batch]
        x, sizes, full = streaming.stack_windows(chunk, device)
        with streaming._masked_convs(tok, sizes, full):
            z_batched = tok.encoder(x)  # (B, D, *S')
        for i, w in enumerate(chunk):
            z = tok.encoder(w[None].to(device))[0]  # (D, *S')
            zb = z_batched[(i, slice(None)) + tuple(slice(0, n) for n in z.shape[1:])]
            z, zb = z.reshape(z.shape[0], -1).t(), zb.reshape(zb.shape[0], -1).t()  # (frames, D)
            rel.append(((zb - z).norm(dim=1) / z.norm(dim=1)).cpu())
            _, near = nearest_codes(z.float(), tok.quantizer.codebook, fragile_rtol=rtol)
            frames_near += int(near.sum())
            windows_near += bool(near.any())
    rel = torch.cat(rel).double()
    return {"frames": len(rel), "max": rel.max().item(), "q9999": rel.quantile(0.9999).item(),
            "median": rel.median().item(), "frames_near": frames_near, "windows_near": windows_near}


def clock(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        return time.perf_counter()
    return time.process_time()


@torch.no_grad()
def speed(tok, items: list[torch.Tensor], batch: int) -> dict:
    """encode_batch against one item at a time: seconds, windows re-encoded alone, equal codes."""
    def alone(item):
        return tok.encode_long(item) if tok.dims == 1 else tok.encode(item[None])[0]

    alone(items[0])  # warm-up
    tok.encode_batch(items[:batch], batch)
    t0 = clock(tok.device)
    ref = [alone(item) for item in items]
    t_alone = clock(tok.device) - t0
    sizes = []
    real = tok.encode_padded
    tok.encode_padded = lambda x, **kw: sizes.append(x.shape[0]) or real(x, **kw)
    try:
        t0 = clock(tok.device)
        out = tok.encode_batch(items, batch)
        t_batch = clock(tok.device) - t0
    finally:
        del tok.encode_padded
    equal = all(torch.equal(a.cpu().flatten(), b.cpu().flatten()) for a, b in zip(ref, out))
    return {"alone_s": t_alone, "batch_s": t_batch, "sent_back": sizes.count(1) if batch > 1 else 0, "equal": equal}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-m", "--model", nargs="+", default=["speech-16k", "speech-8k", "mnist"])
    parser.add_argument("--n", type=int, default=100, help="utterances or images per model")
    parser.add_argument("--batch", type=int, default=8, help="windows per batch (images: 8 times as many)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-tf32", action="store_true", help="CUDA: convolutions and matmuls in full fp32")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.no_tf32:
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    device = torch.device(args.device)
    rtol = streaming.LATENT_RTOL.get(device.type, streaming.LATENT_RTOL_OTHER)
    unit = "wall s" if device.type == "cuda" else "CPU s"
    tf32 = device.type == "cuda" and torch.backends.cudnn.allow_tf32
    print(f"device {device}{' (TF32 convolutions)' if tf32 else ''}, LATENT_RTOL {rtol:g}, {args.threads} thread(s)\n")
    print(f"| model | items | windows | batch | frames | max dz/z | 99.99% | median | frames near a boundary | "
          f"windows near one | one by one {unit} | encode_batch {unit} | speed-up | sent back alone | equal |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for name in args.model:
        tok = load_tokenizer(tokenizer_file(name), device)
        items = load_items(tok, args.n)
        windows, _ = streaming.item_windows(tok, items)
        batch = args.batch if tok.dims == 1 else 8 * args.batch
        noise = latent_noise(tok, windows, batch, rtol)
        sp = speed(tok, items, batch)
        print(f"| {name} | {len(items)} | {len(windows)} | {batch} | {noise['frames']} | {noise['max']:.2e} | "
              f"{noise['q9999']:.2e} | {noise['median']:.2e} | "
              f"{100 * noise['frames_near'] / noise['frames']:.3f}% | {noise['windows_near']} | "
              f"{sp['alone_s']:.2f} | {sp['batch_s']:.2f} | {sp['alone_s'] / sp['batch_s']:.2f}x | {sp['sent_back']} | "
              f"{sp['equal']} |", flush=True)


if __name__ == "__main__":
    main()
