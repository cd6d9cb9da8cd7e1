"""Quantizer training step: vqtok's VectorQuantizer against vector-quantize-pytorch (EMA mode).

One training step = forward + backward through the straight-through estimator + EMA update.
Each (implementation, N, K, D) runs in a fresh subprocess so its peak memory is its own:
peak = ru_maxrss during the steps minus the resident size just before them (inputs and the
module already allocated). Times are medians over a few steps after one warm-up step.

    pip install -e ".[bench]"
    python bench/quantizer.py              # the full grid
    python bench/quantizer.py --quick      # N=8192 rows only
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

DECAY = 0.99


def rss_kib() -> int:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize() // 1024


def build(impl: str, k: int, d: int):
    import torch

    if impl == "vqtok":
        from vqtok.tokenizer.quantizer import QuantizerConfig, VectorQuantizer

        vq = VectorQuantizer(k, d, QuantizerConfig(decay=DECAY)).train()
        # Steady state: skip the one-off k-means init, start from a random codebook with EMA stats.
        vq.codebook.normal_()
        vq.cluster_size.fill_(1.0)
        vq.embed_sum.copy_(vq.codebook)
        vq.initted.fill_(True)
        vq._initted = True

        def step(x, g):
            out = vq(x)
            (out.quantized * g).sum().add(out.commit_loss).backward()

        return step, lambda n: torch.randn(n, d, requires_grad=True)

    from vector_quantize_pytorch import VectorQuantize

    vq = VectorQuantize(dim=d, codebook_size=k, decay=DECAY, kmeans_init=False, rotation_trick=False,
                        commitment_weight=0.25).train()

    def step(x, g):
        quantized, _, loss = vq(x)
        (quantized * g).sum().add(loss.sum()).backward()

    return step, lambda n: torch.randn(1, n, d, requires_grad=True)


def child(impl: str, n: int, k: int, d: int, steps: int) -> None:
    import torch

    torch.manual_seed(0)
    step, make = build(impl, k, d)
    x = make(n)
    g = torch.randn_like(x)
    step(x, g)  # warm-up (allocator, kernels)
    x.grad = None
    base = rss_kib()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step(x, g)
        times.append(time.perf_counter() - t0)
        x.grad = None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(json.dumps({"time": statistics.median(times), "peak_mib": max(peak - base, 0) / 1024}))


def run(impl: str, n: int, k: int, d: int, steps: int) -> dict:
    cmd = [sys.executable, __file__, "--child", impl, str(n), str(k), str(d), str(steps)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"exit {out.returncode}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="only N=8192")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        impl, n, k, d, steps = args.child
        child(impl, int(n), int(k), int(d), int(steps))
        return

    try:
        import vector_quantize_pytorch  # noqa: F401
    except ImportError:
        sys.exit('vector-quantize-pytorch is not installed: pip install -e ".[bench]"')

    ns = [8192] if args.quick else [8192, 65536]
    print("| N | K | D | vqtok ms | vqp ms | speed-up | vqtok peak MiB | vqp peak MiB | memory ratio |")
    print("|---|---|---|---|---|---|---|---|---|")
    for n in ns:
        for k in (512, 8192):
            for d in (64, 256):
                a = run("vqtok", n, k, d, args.steps)
                b = run("vqp", n, k, d, args.steps)
                if "error" in a or "error" in b:
                    print(f"| {n} | {k} | {d} | {a.get('error', '')} | {b.get('error', '')} | | | | |")
                    continue
                print(
                    f"| {n} | {k} | {d} | {a['time'] * 1e3:.1f} | {b['time'] * 1e3:.1f} | "
                    f"{b['time'] / a['time']:.2f}x | {a['peak_mib']:.0f} | {b['peak_mib']:.0f} | "
                    f"{a['peak_mib'] / max(b['peak_mib'], 1e-9):.3f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
