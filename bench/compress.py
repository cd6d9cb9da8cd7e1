"""Benchmark: prior-coded token files (.vqz) on a prior run's whole test split.

Every test map or clip (the run's cached test codes, or encoded by its tokenizer when missing) is compressed
under the prior(s) twice, one .vqz file per item and all items as one archive (what `vqtok compress FOLDER
-o X.vqz` writes), decompressed, and checked identical. Printed for both: bits per image (or per second of
audio) of the payloads beside the prior's NLL on the same codes, the overhead in percent, the header size,
the ratio to the raw codes (ceil(log2 K) bits each), and the coding speed (PixelCNN priors code --batch items
at once; per-item files are byte-identical to coding each alone).

    python bench/compress.py runs/mnist_prior                  # 1,000 MNIST test maps
    python bench/compress.py runs/speech_prior                 # 250 FSDD test clips
    python bench/compress.py runs/mnist_vqvae2_prior --items 100
    python bench/compress.py runs/speech_lm_prior --only archive   # speech/test under speech-lm-16k's prior
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from digit_classifiers import print_table  # noqa: E402

from vqtok.prior.coding import (CodedItem, batchable, coded_class, compress_archive, compress_many,  # noqa: E402
                                decode_files, unpack)
from vqtok.prior.data import CodeSet, load_or_encode  # noqa: E402
from vqtok.prior.generate import load_prior_run  # noqa: E402
from vqtok.prior.recipe import load_prior_recipe  # noqa: E402
from vqtok.prior.train import evaluate_priors  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prior", type=Path, help="prior run folder (holding recipe.yaml and the prior files)")
    parser.add_argument("--items", type=int, default=None, help="first N test items only (default: all)")
    parser.add_argument("--only", choices=("files", "archive"), default=None,
                        help="code one way only: one file per item, or one archive (default: both)")
    parser.add_argument("--batch", type=int, default=32,
                        help="items coded together through a PixelCNN prior (Transformers: one at a time)")
    args = parser.parse_args()

    priors, tok, _ = load_prior_run(args.prior, device="cpu")
    recipe = load_prior_recipe(args.prior / "recipe.yaml")
    cache = Path(recipe.data.cache) if recipe.data.cache else args.prior / "codes"
    codes, _ = load_or_encode(tok, recipe.data, "test", cache)
    n = len(codes) if args.items is None else min(args.items, len(codes))
    subset = codes.batch(list(range(n)))
    part = CodeSet(subset["codes"], subset["lengths"], subset["labels"], subset["sizes"], codes.dims)
    nll = evaluate_priors({p.layout.level: p for p in priors}, part, tok, torch.device("cpu"))
    seconds_audio = float(part.sizes.sum()) / tok.sample_rate if tok.dims == 1 else None
    nll_bits = nll["bits_per_image"] * n if tok.dims == 2 else nll["bits_per_second"] * seconds_audio

    items = []
    for i in range(n):
        # a sequence of residual codebooks back to its (Q, T) token-file shape
        levels = [p.layout.unflatten(subset["codes"][lv][i, : int(subset["lengths"][lv][i])]).numpy()
                  if tok.dims == 1 else subset["codes"][lv][i].numpy() for lv, p in enumerate(priors)]
        label = int(subset["labels"][i])
        label = None if label < 0 else label
        name = f"{i}.npy" if len(priors) == 1 else f"{i}.npz"
        items.append(CodedItem(levels, label, coded_class(priors, label, f"item {i}"), {}, name))
    symbols = sum(lv.size for item in items for lv in item.levels)
    raw = sum(math.prod(lv.shape[1:]) * math.ceil(math.log2(p.layout.codebook_size)) * n
              for lv, p in zip(part.levels, priors)) if tok.dims == 2 else sum(
        int(length.sum()) * math.ceil(math.log2(p.layout.codebook_size)) for length, p in zip(part.lengths, priors))
    unit, per = ("image", n) if tok.dims == 2 else ("second", seconds_audio)

    def run(write) -> tuple[list, float, float]:
        """Compress with `write`, read back, decompress, check; (the .vqz files, encode s, decode s)."""
        start = time.perf_counter()
        files = write()
        encode_s = time.perf_counter() - start
        vqzs = [unpack(data, f"file {i}") for i, data in enumerate(files)]
        start = time.perf_counter()
        decoded = [entry for entries in decode_files(priors, vqzs, batch=args.batch) for entry in entries]
        decode_s = time.perf_counter() - start
        for i, (item, back) in enumerate(zip(items, decoded, strict=True)):
            if not all(np.array_equal(a, b) for a, b in zip(back, item.levels)):
                raise SystemExit(f"item {i}: decompressed codes differ from the input")
        return vqzs, encode_s, decode_s

    ways = {"one file per item": lambda: compress_many(priors, tok.fingerprint, items, batch=args.batch),
            "one archive": lambda: [compress_archive(priors, tok.fingerprint, items, batch=args.batch)]}
    if args.only:
        ways = {k: v for k, v in ways.items() if ("archive" in k) == (args.only == "archive")}
    coded = {what: run(write) for what, write in ways.items()}
    rows = [("items compressed and decompressed identically", f"{n}/{n} ({symbols:,} codes), {len(coded)} way(s)"),
            (f"prior NLL, bits per {unit}", f"{nll_bits / per:,.1f}")]
    for what, (vqzs, encode_s, decode_s) in coded.items():
        payload_bits = sum(8 * v.header.payload_bytes for v in vqzs)
        header_bits = sum(8 * v.overhead_bytes for v in vqzs)
        rows += [
            (f"{what}: payload, bits per {unit}", f"{payload_bits / per:,.1f} "
                                                   f"({100 * (payload_bits / nll_bits - 1):+.2f}% over the NLL)"),
            (f"{what}: header bytes", f"{header_bits / 8 / len(vqzs):,.0f} per file"),
            (f"{what}: whole files, bits per {unit}", f"{(payload_bits + header_bits) / per:,.1f}"),
            (f"{what}: raw codes / payload", f"{raw / payload_bits:.2f}x (raw: {raw / per:,.0f} bits per {unit})"),
            (f"{what}: encode, decode (codes/s)", f"{symbols / encode_s:,.0f}, {symbols / decode_s:,.0f}"),
        ]
    batch = args.batch if batchable(priors) else 1
    print_table(f"prior coding of {args.prior} ({n} test items, one thread, batches of {batch})", rows)


if __name__ == "__main__":
    main()
