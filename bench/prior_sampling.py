"""Benchmark: CPU sampling time of the priors (PixelCNN raster loop, Transformer with and without KV cache).

Randomly initialised models of realistic size; the times do not depend on the weights. Prints a table.

    python bench/prior_sampling.py             # defaults below, about a minute on one core
    python bench/prior_sampling.py --threads 2 --kv-batch 8
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from vqtok.prior import CausalTransformer, GatedPixelCNN, sample_pixelcnn, sample_transformer  # noqa: E402


def timed(fn: Callable[[], torch.Tensor]) -> float:
    """Wall-clock seconds of one call."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: shared machines)")
    parser.add_argument("--codes", type=int, default=512, help="codebook size K")
    parser.add_argument("--kv-batch", type=int, default=4, help="batch for the 256-token cache comparison")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    k = args.codes

    # MNIST-size prior, VQ-VAE paper style: 15 gated layers of 64 channels, 7x7 kernels
    pixelcnn = GatedPixelCNN(k, channels=64, layers=15, kernel_size=7).eval()
    # GPT-style prior: 6 layers of width 256, 8 heads, rotary positions
    transformer = CausalTransformer(k, dim=256, layers=6, heads=8, max_len=256).eval()
    params = {
        "pixelcnn": sum(p.numel() for p in pixelcnn.parameters()) / 1e6,
        "transformer": sum(p.numel() for p in transformer.parameters()) / 1e6,
    }
    gen = torch.Generator().manual_seed(0)
    sample_transformer(transformer, 2, 8, generator=gen)  # warm-up (allocator, kernels)
    sample_pixelcnn(pixelcnn, 2, (2, 2), generator=gen)

    rows: list[tuple[str, int, int, float]] = []

    def run(name: str, n: int, length: int, fn: Callable[[], torch.Tensor]) -> float:
        seconds = timed(fn)
        rows.append((name, n, length, seconds))
        return seconds

    run(f"PixelCNN ({params['pixelcnn']:.1f}M), 7x7 maps", 64, 49,
        lambda: sample_pixelcnn(pixelcnn, 64, (7, 7), generator=gen))
    run(f"Transformer ({params['transformer']:.1f}M), 7x7 raster, KV cache", 64, 49,
        lambda: sample_transformer(transformer, 64, 49, generator=gen))
    run("Transformer, 2 s audio at 100 tok/s, KV cache", 16, 200,
        lambda: sample_transformer(transformer, 16, 200, generator=gen))
    cached = run("Transformer, 256 tokens, KV cache", args.kv_batch, 256,
                 lambda: sample_transformer(transformer, args.kv_batch, 256, generator=gen, use_cache=True))
    full = run("Transformer, 256 tokens, full recompute", args.kv_batch, 256,
               lambda: sample_transformer(transformer, args.kv_batch, 256, generator=gen, use_cache=False))

    print(f"prior sampling on CPU, K={k}, torch {torch.__version__}, {args.threads} thread(s)")
    print()
    print(f"| {'setting':<52} | {'samples':>7} | {'codes':>5} | {'seconds':>7} | {'ms / code step':>14} |")
    print(f"|{'-' * 54}|{'-' * 8}:|{'-' * 6}:|{'-' * 8}:|{'-' * 15}:|")
    for name, n, length, seconds in rows:
        print(f"| {name:<52} | {n:>7} | {length:>5} | {seconds:>7.2f} | {1000 * seconds / length:>14.1f} |")
    print()
    print(f"KV cache speedup at 256 tokens: {full / cached:.1f}x (target >= 5x)")


if __name__ == "__main__":
    main()
