"""Small digit classifiers that score prior samples: a CNN on MNIST images and a CNN on log-mel spectrograms
of spoken digits (FSDD). Trained once, cached under bench/.cache/ (git-ignored), reloaded by later runs.

Used by bench/mnist_samples.py and bench/speech_samples.py; never part of the test run.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

CACHE = Path(__file__).resolve().parent / ".cache"


# ------------------------------------------------------------------------- models
class ImageClassifier(nn.Module):
    """(B, 1, 28, 28) in [0, 1] -> logits (B, 10): two conv stages and a small MLP (~0.1M parameters)."""

    def __init__(self, classes: int = 10):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # (B, 64, 7, 7)
            nn.Flatten(), nn.Dropout(0.3), nn.Linear(64 * 49, 128), nn.ReLU(), nn.Linear(128, classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class LogMel(nn.Module):
    """Waveform (B, T) at 8 kHz -> log mel spectrogram (B, 1, n_mels, frames): 32 ms windows, 10 ms hop."""

    def __init__(self, sample_rate: int = 8000, n_fft: int = 256, hop: int = 80, n_mels: int = 40):
        super().__init__()
        import librosa

        self.n_fft, self.hop = n_fft, hop
        fb = librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels)  # (n_mels, n_fft // 2 + 1)
        self.register_buffer("fb", torch.from_numpy(fb).float())
        self.register_buffer("window", torch.hann_window(n_fft))

    def forward(self, wav: Tensor) -> Tensor:
        spec = torch.stft(wav, self.n_fft, self.hop, window=self.window, return_complex=True).abs()  # (B, F, N)
        mel = torch.einsum("mf,bfn->bmn", self.fb, spec)
        return torch.log(mel + 1e-4)[:, None]


class SpeechClassifier(nn.Module):
    """Waveform (B, T) -> logits (B, 10): log-mel, three conv stages, mean and max over time (any length)."""

    def __init__(self, classes: int = 10):
        super().__init__()
        self.features = LogMel()
        self.norm = nn.BatchNorm2d(1)
        self.net = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(64, 96, 3, padding=1), nn.BatchNorm2d(96), nn.ReLU(),  # (B, 96, 10, frames / 4)
        )
        self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(2 * 96 * 10, classes))

    def forward(self, wav: Tensor) -> Tensor:
        x = self.net(self.norm(self.features(wav)))
        x = x.flatten(1, 2)  # (B, 960, frames')
        return self.head(torch.cat([x.mean(-1), x.amax(-1)], dim=1))


# ------------------------------------------------------------------------- data
def mnist_split(root: str | Path, split: str) -> tuple[Tensor, Tensor]:
    """Images (N, 1, 28, 28) in [0, 1] and labels (N,)."""
    from vqtok.data.mnist import load_mnist

    images, labels = load_mnist(root, split)
    return torch.from_numpy(images).float().div(255)[:, None], torch.from_numpy(labels)


def fsdd_split(root: str | Path, split: str) -> tuple[list[Tensor], Tensor]:
    """Whole clips (T,) at 8 kHz and digit labels (N,) of one FSDD split (fsdd rule: takes 0-4 are the test)."""
    from vqtok.data.audio import AudioFolder

    folder = AudioFolder(root, 8000, None, split, "fsdd", random_crop=False)
    return [torch.from_numpy(folder.clip(i)) for i in range(len(folder))], torch.tensor(folder.labels)


def pad_batch(clips: list[Tensor], length: int | None = None) -> Tensor:
    """Clips (T_i,) -> (B, T) zero-padded at the end (to `length`, or the longest; longer clips are cut)."""
    length = length or max(len(c) for c in clips)
    out = torch.zeros(len(clips), length)
    for i, c in enumerate(clips):
        out[i, : min(len(c), length)] = c[:length]
    return out


# ----------------------------------------------------------------------- training
def train_classifier(model: nn.Module, inputs, labels: Tensor, make_batch: Callable, epochs: int, lr: float,
                     batch_size: int = 64, seed: int = 0) -> nn.Module:
    """Adam + cosine decay over `epochs`; make_batch(inputs, index, train=True) -> (B, ...) tensor."""
    torch.manual_seed(seed)
    n = len(labels)
    steps = epochs * math.ceil(n / batch_size)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    model.train()
    start = time.perf_counter()
    for epoch in range(epochs):
        order = torch.randperm(n)
        total, correct = 0.0, 0
        for i in range(0, n, batch_size):
            index = order[i : i + batch_size]
            logits = model(make_batch(inputs, index, True))
            loss = F.cross_entropy(logits, labels[index])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(index)
            correct += int((logits.argmax(1) == labels[index]).sum())
        print(f"  epoch {epoch + 1}/{epochs}: loss {total / n:.4f}, train accuracy {correct / n:.3f} "
              f"({time.perf_counter() - start:.0f} s)", flush=True)
    return model.eval()


@torch.no_grad()
def probabilities(model: nn.Module, inputs, make_batch: Callable, batch_size: int = 128) -> Tensor:
    """p(y | x) (N, 10) in eval mode."""
    model.eval()
    out = []
    for i in range(0, len(inputs), batch_size):
        out.append(model(make_batch(inputs, torch.arange(i, min(i + batch_size, len(inputs))), False)).softmax(1))
    return torch.cat(out)


def image_batch(images: Tensor, index: Tensor, train: bool) -> Tensor:
    """Training batches are shifted by up to 2 pixels, so the classifier does not hang on exact centring."""
    x = images[index]
    if not train:
        return x
    dx, dy = (int(v) for v in torch.randint(-2, 3, (2,)))
    return torch.roll(x, shifts=(dy, dx), dims=(2, 3))


def clip_batch(clips: list[Tensor], index: Tensor, train: bool) -> Tensor:
    """Training clips get a random gain (+-6 dB) and a random start offset (0-0.1 s of leading silence)."""
    chosen = [clips[int(i)] for i in index]
    if train:
        chosen = [torch.cat([torch.zeros(int(torch.randint(0, 800, ()))), c]) * 10 ** (float(torch.rand(())) * 0.6 - 0.3)
                  for c in chosen]
    return pad_batch(chosen)


def cached_classifier(name: str, build: Callable[[], nn.Module], train: Callable[[nn.Module], nn.Module]) -> nn.Module:
    """bench/.cache/NAME.pt when present (a state dict, loaded with weights_only=True), else trained and saved."""
    from vqtok.files import atomic_write

    path = CACHE / f"{name}.pt"
    model = build()
    if path.is_file():
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        print(f"classifier: {path} (cached)")
        return model.eval()
    print(f"classifier: training {name} (cached afterwards in {path})")
    model = train(model)
    CACHE.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: torch.save(model.state_dict(), tmp))
    return model.eval()


def mnist_classifier(root: str | Path, epochs: int = 6) -> nn.Module:
    images, labels = mnist_split(root, "train")
    return cached_classifier("mnist_classifier", ImageClassifier,
                             lambda m: train_classifier(m, images, labels, image_batch, epochs, 2e-3))


def speech_classifier(root: str | Path, epochs: int = 20) -> nn.Module:
    clips, labels = fsdd_split(root, "train")
    return cached_classifier("fsdd_classifier", SpeechClassifier,
                             lambda m: train_classifier(m, clips, labels, clip_batch, epochs, 2e-3, batch_size=32))


# ------------------------------------------------------------------------ scores
def accuracy(probs: Tensor, labels: Tensor) -> float:
    """Fraction of items whose most likely class is the label."""
    return float((probs.argmax(1) == labels).float().mean())


def classifier_score(probs: Tensor) -> float:
    """exp(E_x KL(p(y|x) || p(y))) with p(y) the mean of p(y|x) over the samples (the Inception Score of
    Salimans et al. 2016 with a digit classifier): 1 for uninformative samples, at most the number of
    classes for confidently classified samples spread evenly over the classes."""
    marginal = probs.mean(0, keepdim=True)
    kl = (probs * (torch.log(probs + 1e-12) - torch.log(marginal + 1e-12))).sum(1)
    return float(torch.exp(kl.mean()))


# ------------------------------------------------------------------------ report
def prior_nll_rows(run: Path) -> list[tuple[str, str]]:
    """The NLL figures (nll*, bits*) of a prior run's last validation in metrics.jsonl, as table rows."""
    path = run / "metrics.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
    valid = [r for r in rows if r.get("split") == "valid"]
    if not valid:
        return []
    last = valid[-1]
    return [(f"prior test {key} (step {last['step']})", f"{value:.4f}")
            for key, value in last.items() if key.startswith(("nll", "bits"))]


def timed(fn: Callable):
    """(fn(), seconds it took)."""
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def print_table(title: str, rows: list[tuple[str, str]]) -> None:
    """A title line, then a two-column markdown table of (measure, value) rows."""
    print(title)
    print()
    width = max(len(r[0]) for r in rows)
    value_width = max(10, *(len(r[1]) for r in rows))
    print(f"| {'measure':<{width}} | {'value':>{value_width}} |")
    print(f"|{'-' * (width + 2)}|{'-' * (value_width + 1)}:|")
    for name, value in rows:
        print(f"| {name:<{width}} | {value:>{value_width}} |")


def as_numpy(x: Tensor) -> np.ndarray:
    return x.detach().cpu().numpy()
