"""Waveform discriminators and GAN losses for adversarial tokenizer training (HiFi-GAN MPD + EnCodec MS-STFT-D)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm

LEAK = 0.1  # leaky-ReLU slope of both discriminator families (HiFi-GAN, EnCodec)


@dataclass
class AdversarialConfig:
    """`loss.adversarial` of an audio tokenizer recipe: the discriminators and the weights of their terms."""

    weight: float = 1.0  # hinge generator loss, averaged over the discriminators
    feature_weight: float = 2.0  # feature matching: L1 between real and fake features, relative to |real|
    start_step: int = 0  # reconstruction-only warm-up before the discriminators start
    # Then this many steps in which the discriminators train alone, their terms kept from the generator: a fresh
    # discriminator learns to judge a trained model (--init-from) before its gradients move it.
    disc_warmup: int = 0
    lr: float | None = None  # discriminator learning rate (default: train.lr)
    periods: list[int] = field(default_factory=lambda: [2, 3, 5, 7, 11])  # multi-period discriminator
    fft_sizes: list[int] = field(default_factory=lambda: [256, 512, 1024])  # multi-resolution STFT discriminator
    channels: int = 16  # base width of every sub-discriminator


@dataclass
class Judgement:
    """Each sub-discriminator's score map and its hidden feature maps (for feature matching)."""

    scores: list[Tensor]
    features: list[list[Tensor]]

    def halves(self, n: int) -> tuple[Judgement, Judgement]:
        """Split the judgement of a batch [a; b] (a has `n` items) into the judgements of a and of b."""
        first = Judgement([s[:n] for s in self.scores], [[f[:n] for f in fs] for fs in self.features])
        second = Judgement([s[n:] for s in self.scores], [[f[n:] for f in fs] for fs in self.features])
        return first, second


def judge(convs: nn.ModuleList, post: nn.Module, x: Tensor) -> tuple[Tensor, list[Tensor]]:
    """The shared body of every sub-discriminator: leaky-ReLU convs, each output kept as a feature map for
    feature matching, then the score map of `post`."""
    features = []
    for conv in convs:
        x = F.leaky_relu(conv(x), LEAK)
        features.append(x)
    return post(x), features


class PeriodDiscriminator(nn.Module):
    """HiFi-GAN's period discriminator: the waveform folded to (T/p, p), 2-D convs along the first axis only."""

    def __init__(self, period: int, channels: int):
        super().__init__()
        self.period = period
        widths = [1, channels, 4 * channels, 16 * channels, 16 * channels]
        self.convs = nn.ModuleList(
            weight_norm(nn.Conv2d(c_in, c_out, (5, 1), (3 if i < 3 else 1, 1), padding=(2, 0)))
            for i, (c_in, c_out) in enumerate(zip(widths[:-1], widths[1:]))
        )
        self.post = weight_norm(nn.Conv2d(widths[-1], 1, (3, 1), padding=(1, 0)))

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """x: (B, 1, T) -> (scores (B, 1, T', p), features)."""
        b, c, t = x.shape
        x = F.pad(x, (0, (-t) % self.period), mode="reflect" if t > self.period else "constant")
        return judge(self.convs, self.post, x.view(b, c, -1, self.period))  # (B, 1, T/p, p)


class STFTDiscriminator(nn.Module):
    """EnCodec's STFT discriminator: real and imaginary parts of one STFT as two channels of a 2-D conv net.

    Convs stride 2 along frequency and dilate 1, 2, 4 along time, so each resolution judges both the
    harmonic structure and the phase coherence the magnitude-only losses leave free.
    """

    def __init__(self, n_fft: int, channels: int):
        super().__init__()
        self.n_fft = n_fft
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        c = 2 * channels
        layers = [nn.Conv2d(2, c, (3, 9), padding=(1, 4))]
        layers += [nn.Conv2d(c, c, (3, 9), stride=(1, 2), dilation=(d, 1), padding=(d, 4)) for d in (1, 2, 4)]
        layers += [nn.Conv2d(c, c, (3, 3), padding=(1, 1))]
        self.convs = nn.ModuleList(weight_norm(layer) for layer in layers)
        self.post = weight_norm(nn.Conv2d(c, 1, (3, 3), padding=(1, 1)))

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """x: (B, 1, T) -> (scores (B, 1, N, F'), features)."""
        with torch.autocast(device_type=x.device.type, enabled=False):  # the STFT in fp32
            spec = torch.stft(x.float().squeeze(1), self.n_fft, self.n_fft // 4, window=self.window,
                              return_complex=True)  # (B, F, N)
        z = torch.stack([spec.real, spec.imag], dim=1).transpose(2, 3)  # (B, 2, N, F): time, then frequency
        return judge(self.convs, self.post, z)


class Discriminators(nn.Module):
    """All sub-discriminators of a recipe: one per period, then one per STFT size."""

    def __init__(self, cfg: AdversarialConfig):
        super().__init__()
        self.members = nn.ModuleList(
            [PeriodDiscriminator(p, cfg.channels) for p in cfg.periods]
            + [STFTDiscriminator(n, cfg.channels) for n in cfg.fft_sizes]
        )
        if not len(self.members):
            raise ValueError("loss.adversarial needs at least one period or one fft size")

    def forward(self, x: Tensor) -> Judgement:
        """x: (B, 1, T) waveform."""
        scores, features = [], []
        for member in self.members:
            s, f = member(x)
            scores.append(s)
            features.append(f)
        return Judgement(scores, features)


# ------------------------------------------------------------------------- losses
def discriminator_loss(real: Judgement, fake: Judgement) -> Tensor:
    """Hinge loss, mean over sub-discriminators: relu(1 - D(x)) + relu(1 + D(G(z)))."""
    terms = [F.relu(1 - r.float()).mean() + F.relu(1 + f.float()).mean() for r, f in zip(real.scores, fake.scores)]
    return torch.stack(terms).mean()


def generator_loss(fake: Judgement) -> Tensor:
    """Hinge generator loss, mean over sub-discriminators: relu(1 - D(G(z)))."""
    return torch.stack([F.relu(1 - f.float()).mean() for f in fake.scores]).mean()


def feature_matching(real: Judgement, fake: Judgement) -> Tensor:
    """Mean over every hidden layer of |f_real - f_fake| / mean |f_real| (EnCodec's relative feature loss).

    The real features are constants (detached): this term moves the generator only.
    """
    terms = []
    for real_maps, fake_maps in zip(real.features, fake.features):
        for r, f in zip(real_maps, fake_maps):
            r = r.detach().float()
            terms.append((r - f.float()).abs().mean() / r.abs().mean().clamp_min(1e-5))
    return torch.stack(terms).mean()
