"""Benchmark: CPU sampling time of the priors, fast path against recomputing the whole prefix per code.

Models are built at the sizes the recipes train (recipes/mnist_prior.yaml, recipes/speech_prior.yaml) plus a
GPT-style 6x256 Transformer, randomly initialised: sampling time does not depend on the weights. Workloads:

* 64 MNIST samples (7x7 maps, K=512, class-conditional): the PixelCNN's row-wise sampler (vertical stack once
  per row, horizontal stack once per code) against a full forward pass per code; and a Transformer over the
  same maps in raster order, KV cache against full recompute.
* 16 two-second audio samples at the speech tokenizer's rate (recipes/speech.yaml: 320 codes/s, so 640
  codes, K=1024 + PAD/BOS/EOS), the speech prior's Transformer: KV cache against full recompute.
* 256 tokens with the 6x256 Transformer: the issue's KV-cache figure (target at least 5x).

Both paths of each pair draw the same codes under the same seed (checked here as well as in the tests).

    python bench/prior_sampling.py             # ~10 minutes on one core (full recompute dominates)
    python bench/prior_sampling.py --quick     # smaller batches, a couple of minutes
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from vqtok.prior import CausalTransformer, GatedPixelCNN, sample_pixelcnn, sample_transformer  # noqa: E402
from vqtok.prior.sampling import draw, filter_logits  # noqa: E402


def recipe_model(name: str) -> dict:
    """The `model.config` mapping of a recipe in recipes/."""
    return dict(yaml.safe_load((ROOT / "recipes" / name).read_text())["model"]["config"])


def speech_frame_rate() -> float:
    """Codes per second of recipes/speech.yaml's tokenizer: sample rate over the product of the strides."""
    model = yaml.safe_load((ROOT / "recipes" / "speech.yaml").read_text())["model"]
    return model["sample_rate"] / math.prod(model["net"]["strides"])


@torch.no_grad()
def pixelcnn_full_recompute(model: GatedPixelCNN, n: int, shape: tuple[int, int], labels: torch.Tensor,
                            generator: torch.Generator) -> torch.Tensor:
    """The reference sampler: one full forward pass over the whole (n, H, W) map for every code."""
    height, width = shape
    codes = torch.zeros(n, height, width, dtype=torch.long)
    for i in range(height):
        for j in range(width):
            logits = model(codes, labels)[:, :, i, j]  # (n, K)
            codes[:, i, j] = draw(filter_logits(logits, 1.0, None, None), generator)
    return codes


def timed(fn: Callable[[], torch.Tensor]) -> tuple[float, torch.Tensor]:
    """Wall-clock seconds of one call, and what it returned."""
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: shared machines)")
    parser.add_argument("--quick", action="store_true", help="16 MNIST samples, 4 audio samples")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    n_images, n_audio = (16, 4) if args.quick else (64, 16)
    audio_len = round(2 * speech_frame_rate())  # two seconds of codes

    pix_cfg = recipe_model("mnist_prior.yaml")
    pixelcnn = GatedPixelCNN(512, num_classes=10, **pix_cfg).eval()
    speech_cfg = recipe_model("speech_prior.yaml")
    speech_cfg.update(max_len=audio_len + 1, dropout=0.0)  # rotary: max_len only sizes the tables
    speech = CausalTransformer(1024 + 3, num_classes=10, **speech_cfg).eval()
    raster = CausalTransformer(512, num_classes=10, **{**speech_cfg, "max_len": 49}).eval()
    gpt = CausalTransformer(512, dim=256, layers=6, heads=8, max_len=256).eval()
    millions = {name: sum(p.numel() for p in m.parameters()) / 1e6
                for name, m in [("pix", pixelcnn), ("speech", speech), ("raster", raster), ("gpt", gpt)]}
    sample_transformer(gpt, 2, 8, generator=torch.Generator().manual_seed(0))  # warm-up (allocator, kernels)

    labels_img = torch.arange(n_images) % 10
    labels_audio = torch.arange(n_audio) % 10
    workloads = [
        (f"MNIST 7x7, PixelCNN {pix_cfg['layers']}x{pix_cfg['channels']} ({millions['pix']:.2f}M), "
         "row-wise vs full", n_images, 49,
         lambda g: sample_pixelcnn(pixelcnn, n_images, (7, 7), labels_img, generator=g),
         lambda g: pixelcnn_full_recompute(pixelcnn, n_images, (7, 7), labels_img, g)),
        (f"MNIST 7x7 raster, Transformer {speech_cfg['layers']}x{speech_cfg['dim']} ({millions['raster']:.2f}M)",
         n_images, 49,
         lambda g: sample_transformer(raster, n_images, 49, labels_img, generator=g),
         lambda g: sample_transformer(raster, n_images, 49, labels_img, generator=g, use_cache=False)),
        (f"2 s speech at {speech_frame_rate():.0f} codes/s, speech prior ({millions['speech']:.2f}M)",
         n_audio, audio_len,
         lambda g: sample_transformer(speech, n_audio, audio_len, labels_audio, generator=g),
         lambda g: sample_transformer(speech, n_audio, audio_len, labels_audio, generator=g, use_cache=False)),
        (f"256 tokens, Transformer 6x256 ({millions['gpt']:.2f}M)", 4, 256,
         lambda g: sample_transformer(gpt, 4, 256, generator=g),
         lambda g: sample_transformer(gpt, 4, 256, generator=g, use_cache=False)),
    ]

    rows = []
    for name, n, length, fast, full in workloads:
        fast_s, fast_codes = timed(lambda: fast(torch.Generator().manual_seed(1)))
        full_s, full_codes = timed(lambda: full(torch.Generator().manual_seed(1)))
        same = "yes" if torch.equal(fast_codes, full_codes) else "NO"
        rows.append((name, n, length, fast_s, full_s, same))
        print(f"  {name}: {fast_s:.2f} s vs {full_s:.2f} s", file=sys.stderr)

    print(f"prior sampling on CPU, torch {torch.__version__}, {args.threads} thread(s); "
          "fast = KV cache (Transformer) or row-wise stacks (PixelCNN)")
    print()
    print(f"| {'workload':<66} | {'samples':>7} | {'codes':>5} | {'fast s':>7} | {'full s':>8} | "
          f"{'speed-up':>8} | {'same codes':>10} |")
    print(f"|{'-' * 68}|{'-' * 8}:|{'-' * 6}:|{'-' * 8}:|{'-' * 9}:|{'-' * 9}:|{'-' * 11}:|")
    for name, n, length, fast_s, full_s, same in rows:
        print(f"| {name:<66} | {n:>7} | {length:>5} | {fast_s:>7.2f} | {full_s:>8.2f} | "
              f"{full_s / fast_s:>7.1f}x | {same:>10} |")


if __name__ == "__main__":
    main()
