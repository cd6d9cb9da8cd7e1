"""PNG output: image grids and training curves from a run's metrics.jsonl."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vqtok.files import atomic_write

# matplotlib is imported inside the functions that draw (not to dodge a cycle): it costs about a second per
# process, and every trainer, `vqtok decode` and DataLoader worker imports this module for save_png alone.


def image_grid(images: torch.Tensor, nrow: int = 8, pad: int = 2) -> np.ndarray:
    """(N, C, H, W) in [0, 1] -> (H', W', C) uint8 grid, row-major."""
    images = images.detach().float().clamp(0, 1).cpu()
    n, c, h, w = images.shape
    ncol = min(nrow, n)
    rows = math.ceil(n / ncol)
    grid = torch.ones(c, rows * (h + pad) + pad, ncol * (w + pad) + pad)
    for i in range(n):
        r, q = divmod(i, ncol)
        grid[:, pad + r * (h + pad) : pad + r * (h + pad) + h, pad + q * (w + pad) : pad + q * (w + pad) + w] = images[i]
    out = (grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    return out


def save_png(array: np.ndarray, path: str | Path) -> None:
    """uint8 (H, W) or (H, W, C) -> PNG, written atomically."""
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    img = Image.fromarray(array)
    atomic_write(path, lambda tmp: img.save(tmp, format="PNG"))


def read_jsonl(path: str | Path) -> list[dict]:
    rows = []
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if line:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut short by a crash
    return rows


def plot_run(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Loss and codebook-usage curves of a run (train and validation) -> PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    rows = read_jsonl(run_dir / "metrics.jsonl")
    if any(key.startswith("nll") for row in rows for key in row):
        return plot_prior_run(run_dir, rows, out)
    train = [r for r in rows if r.get("split") == "train"]
    valid = [r for r in rows if r.get("split") == "valid"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    loss_keys = [k for k in (train[0] if train else {}) if k.startswith("loss")]
    for key in loss_keys:
        axes[0].plot([r["step"] for r in train], [r[key] for r in train], label=key)
    axes[0].set_yscale("log")
    axes[0].set_title("training losses")
    valid_keys = [k for k in (valid[0] if valid else {}) if k in ("mse", "l1", "mel_distance")]
    for key in valid_keys:
        axes[1].plot([r["step"] for r in valid], [r[key] for r in valid], marker="o", label=f"valid {key}")
    axes[1].set_yscale("log")
    axes[1].set_title("validation")
    for key in sorted(k for k in (train[0] if train else {}) if k.startswith("usage")):
        held = [r for r in train if key in r]  # a decoder-only stage of a staged run logs no usage
        axes[2].plot([r["step"] for r in held], [r[key] for r in held], label=f"train {key}")
    for key in sorted(k for k in (valid[0] if valid else {}) if k.startswith("usage")):
        axes[2].plot([r["step"] for r in valid], [r[key] for r in valid], marker="o", label=f"valid {key}")
    axes[2].set_ylim(0, 1.05)
    axes[2].set_title("fraction of codes used")
    return save_curves(fig, axes, Path(out) if out else run_dir / "curves.png")


def plot_prior_run(run_dir: str | Path, rows: list[dict], out: str | Path | None = None) -> Path:
    """A prior run's curves: training and validation NLL per level (nats per code), and bits per image/second."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    train = [r for r in rows if r.get("split") == "train"]
    valid = [r for r in rows if r.get("split") == "valid"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for key in sorted({k for r in train for k in r if k.startswith("nll")}):
        axes[0].plot([r["step"] for r in train if key in r], [r[key] for r in train if key in r], label=f"train {key}")
    for key in sorted({k for r in valid for k in r if k.startswith("nll")}):
        axes[0].plot([r["step"] for r in valid if key in r], [r[key] for r in valid if key in r], marker="o",
                     label=f"valid {key}")
    axes[0].set_title("NLL (nats per code)")
    for key in ("bits_per_image", "bits_per_second"):
        points = [(r["step"], r[key]) for r in valid if key in r]
        if points:
            axes[1].plot(*zip(*points), marker="o", label=f"valid {key}")
    axes[1].set_title("validation description length")
    return save_curves(fig, axes, Path(out) if out else run_dir / "curves.png")


def save_curves(fig, axes, out: Path) -> Path:
    """Label, legend and grid every panel of a curves figure, then write it as a PNG (atomically)."""
    import matplotlib.pyplot as plt

    for ax in axes:
        ax.set_xlabel("step")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    atomic_write(out, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)
    return out


def save_spectrograms(waves: list[torch.Tensor], sample_rate: int, titles: list[str], out: str | Path,
                      ncol: int = 4) -> Path:
    """Log-power spectrograms of mono clips (T,) as one PNG grid: a picture of audio one can read without
    listening (32 ms Hann windows, 75% overlap, one colour scale over all panels, 80 dB range)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_fft = 1 << max(6, round(math.log2(0.032 * sample_rate)))  # ~32 ms: 256 at 8 kHz
    window = torch.hann_window(n_fft)
    specs = []
    for wave in waves:
        wave = wave.detach().float().cpu().flatten()
        wave = torch.nn.functional.pad(wave, (0, max(0, n_fft - len(wave))))
        power = torch.stft(wave, n_fft, n_fft // 4, window=window, return_complex=True).abs().square()  # (F, N)
        specs.append(10 * torch.log10(power + 1e-10))
    top = max(float(s.max()) for s in specs) if specs else 0.0
    ncol = max(1, min(ncol, len(specs)))
    nrow = max(1, math.ceil(len(specs) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.2 * ncol, 2.4 * nrow), squeeze=False)
    for ax in axes.flat[len(specs):]:
        ax.axis("off")
    for ax, spec, wave, title in zip(axes.flat, specs, waves, titles):
        seconds = wave.numel() / sample_rate
        ax.imshow(spec.numpy(), origin="lower", aspect="auto", cmap="magma", vmin=top - 80, vmax=top,
                  extent=(0, seconds, 0, sample_rate / 2000))
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("s", fontsize=8)
        ax.set_ylabel("kHz", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    out = Path(out)
    atomic_write(out, lambda tmp: fig.savefig(tmp, format="png", dpi=80))
    plt.close(fig)
    return out
