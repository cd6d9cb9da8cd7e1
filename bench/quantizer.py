"""Quantizer training step: vqtok's VectorQuantizer, ResidualVQ and FSQ against vector-quantize-pytorch.

One training step = forward + backward through the straight-through estimator + EMA update.
Each (implementation, N, K, D) runs in a fresh subprocess so its peak memory is its own:
peak = the resident high-water mark during the steps (VmHWM, reset just before them) minus the resident size
then (inputs and the module already allocated), so an import's transient peak does not count. Times are medians over a few steps after one warm-up step.

    pip install -e ".[bench]"
    python bench/quantizer.py              # the full grid
    python bench/quantizer.py --quick      # N=8192 rows only
    python bench/quantizer.py --kind rvq   # residual VQ (8 stages, EMA) and FSQ rows
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


def high_water_kib() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))


def build(impl: str, k: int, d: int):
    import torch

    if impl == "vqtok":
        from vqtok.tokenizer.quantizer import QuantizerConfig, VectorQuantizer

        vq = VectorQuantizer(k, d, QuantizerConfig(decay=DECAY)).train()
        steady_state(vq)
        return vqtok_step(vq), lambda n: torch.randn(n, d, requires_grad=True)

    from vector_quantize_pytorch import VectorQuantize

    vq = VectorQuantize(dim=d, codebook_size=k, decay=DECAY, kmeans_init=False, rotation_trick=False,
                        commitment_weight=0.25).train()
    return vqp_step(vq), lambda n: torch.randn(1, n, d, requires_grad=True)


def vqtok_step(quantizer):
    """One training step of a vqtok quantizer: forward, a loss through the STE plus the commitment, backward."""

    def step(x, g):
        out = quantizer(x)
        (out.quantized * g).sum().add(out.commit_loss).backward()

    return step


def vqp_step(quantizer):
    """The same step for a vector-quantize-pytorch VectorQuantize / ResidualVQ ((quantized, codes, loss) out)."""

    def step(x, g):
        quantized, _, loss = quantizer(x)
        (quantized * g).sum().add(loss.sum()).backward()

    return step


RVQ_STAGES = 8
FSQ_LEVELS = {1000: [8, 5, 5, 5], 15360: [8, 8, 8, 6, 5], 64000: [8, 8, 8, 5, 5, 5]}


def steady_state(vq) -> None:
    """Skip the one-off k-means init: a random codebook with EMA stats."""
    vq.codebook.normal_()
    vq.cluster_size.fill_(1.0)
    vq.embed_sum.copy_(vq.codebook)
    vq.initted.fill_(True)
    vq._initted = True


def build_rvq(impl: str, k: int, d: int):
    """A residual VQ of RVQ_STAGES EMA codebooks of k codes each, no quantizer dropout."""
    import torch

    if impl == "vqtok":
        from vqtok.tokenizer.rvq import ResidualVQ

        rvq = ResidualVQ(RVQ_STAGES, k, d).train()
        for vq in rvq.stages:
            steady_state(vq)
        return vqtok_step(rvq), lambda n: torch.randn(n, d, requires_grad=True)

    from vector_quantize_pytorch import ResidualVQ as VqpResidualVQ

    rvq = VqpResidualVQ(dim=d, num_quantizers=RVQ_STAGES, codebook_size=k, decay=DECAY, kmeans_init=False,
                        rotation_trick=False, commitment_weight=0.25).train()
    return vqp_step(rvq), lambda n: torch.randn(1, n, d, requires_grad=True)


def build_fsq(impl: str, k: int, d: int):
    """FSQ with the levels FSQ_LEVELS[k] (d = their count: no projection on either side)."""
    import torch

    levels = FSQ_LEVELS[k]
    if impl == "vqtok":
        from vqtok.tokenizer.fsq import FSQ

        fsq = FSQ(levels)

        def step(x, g):
            (fsq(x).quantized * g).sum().backward()

        return step, lambda n: torch.randn(n, d, requires_grad=True)

    from vector_quantize_pytorch import FSQ as VqpFSQ

    fsq = VqpFSQ(levels=levels)

    def step(x, g):
        quantized, _ = fsq(x)
        (quantized * g).sum().backward()

    return step, lambda n: torch.randn(1, n, d, requires_grad=True)


BUILDERS = {"vq": build, "rvq": build_rvq, "fsq": build_fsq}

def child(kind: str, impl: str, n: int, k: int, d: int, steps: int) -> None:
    import torch

    torch.manual_seed(0)
    step, make = BUILDERS[kind](impl, k, d)
    x = make(n)
    g = torch.randn_like(x)
    step(x, g)  # warm-up (allocator, kernels)
    x.grad = None
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current resident size (Linux >= 4.0)
    base = rss_kib()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step(x, g)
        times.append(time.perf_counter() - t0)
        x.grad = None
    peak = high_water_kib()
    print(json.dumps({"time": statistics.median(times), "peak_mib": max(peak - base, 0) / 1024}))


def run(kind: str, impl: str, n: int, k: int, d: int, steps: int) -> dict:
    cmd = [sys.executable, __file__, "--child", kind, impl, str(n), str(k), str(d), str(steps)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"exit {out.returncode}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="only N=8192")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--kind", choices=["vq", "rvq"], default="vq",
                        help="vq: one codebook; rvq: residual VQ (8 stages) and FSQ")
    parser.add_argument("--child", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, impl, n, k, d, steps = args.child
        child(kind, impl, int(n), int(k), int(d), int(steps))
        return

    try:
        import vector_quantize_pytorch  # noqa: F401
    except ImportError:
        sys.exit('vector-quantize-pytorch is not installed: pip install -e ".[bench]"')

    ns = [8192] if args.quick else [8192, 65536]
    if args.kind == "rvq":
        grid = [("rvq", 1024, d) for d in (64, 128)] + [("fsq", k, len(v)) for k, v in FSQ_LEVELS.items()]
    else:
        grid = [("vq", k, d) for k in (512, 8192) for d in (64, 256)]
    print("| kind | N | K | D | vqtok ms | vqp ms | speed-up | vqtok peak MiB | vqp peak MiB | memory ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for n in ns:
        for kind, k, d in grid:
            a = run(kind, "vqtok", n, k, d, args.steps)
            b = run(kind, "vqp", n, k, d, args.steps)
            if "error" in a or "error" in b:
                print(f"| {kind} | {n} | {k} | {d} | {a.get('error', '')} | {b.get('error', '')} | | | | |")
                continue
            print(
                f"| {kind} | {n} | {k} | {d} | {a['time'] * 1e3:.1f} | {b['time'] * 1e3:.1f} | "
                f"{b['time'] / a['time']:.2f}x | {a['peak_mib']:.0f} | {b['peak_mib']:.0f} | "
                f"{a['peak_mib'] / max(b['peak_mib'], 1e-9):.3f} |",
                flush=True,
            )

if __name__ == "__main__":
    main()
