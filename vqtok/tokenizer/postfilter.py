"""Spectral sharpening postfilter for decoded speech (`TokenizerConfig.postfilter`).

A decoder trained with spectral losses (L1 on STFT magnitudes, log-mel) fills the valleys between formants and
between harmonics with noise: its spectra are smoother than speech. Classical speech codecs end with a postfilter
that deepens those valleys (Codec 2, AMR and G.729 all have one). This one raises each STFT frame's magnitudes to
a power `exponent` > 1, rescales the frame to its own energy and keeps the phase: peaks stand out, valleys sink,
the loudness stays. speech-8k on 37 test pieces: PESQ-nb 2.63 -> 2.80 at exponent 1.1, STOI 0.874 -> 0.871; the
same filter moves Codec 2 3200 by +0.04 and Opus 6 by +0.06, clean speech by -0.01.

Frames: periodic Hann window of ~32 ms (a power of two in samples), hop a quarter of it, the clip zero-padded so
that every sample lies in exactly four frames (the window's squared sum is then the same for every sample).
`Postfilter` takes the audio in pieces of any size; frames go through the FFT in fixed groups counted from the
clip's start, so the output is bit-identical however the clip is cut, and `sharpen` (the whole clip at once)
is that same computation.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

WINDOW_SECONDS = 0.032
FRAMES_PER_GROUP = 64  # frames per FFT call: fixed, counted from the start (bit-identical for any cut)
OVERLAP = 4  # frames covering each sample (hop = window / 4)


def window_size(sample_rate: int) -> int:
    """The power of two nearest to 32 ms of samples: 256 at 8 kHz, 512 at 16 kHz."""
    return 2 ** max(3, round(math.log2(WINDOW_SECONDS * sample_rate)))


class Postfilter:
    """Streaming sharpening of mono audio: `add(piece)` returns the samples that are final so far, `flush()` the
    rest; together they are the whole clip, `sharpen`'s samples exactly."""

    def __init__(self, sample_rate: int, exponent: float, group: int = FRAMES_PER_GROUP):
        """`group`: frames per FFT call in `add`; 1 gives every sample back as soon as its four frames are in (live
        decoding, stream.py), with the same output."""
        if not exponent > 0:
            raise ValueError(f"postfilter exponent must be positive, got {exponent}")
        self.exponent = float(exponent)
        self.group = group
        self.n = window_size(sample_rate)
        self.hop = self.n // OVERLAP
        self.window = torch.hann_window(self.n)
        # each sample lies in OVERLAP frames, at these window offsets: the squared window summed, per place in a hop
        self.envelope = (self.window.reshape(OVERLAP, self.hop) ** 2).sum(0)  # (hop,)
        pad = (OVERLAP - 1) * self.hop  # zeros before the clip: frame i covers samples (i - 3) hop .. (i + 1) hop
        self.buffer = torch.zeros(pad)  # from the next frame's start
        self.tail = torch.zeros(OVERLAP - 1, self.n)  # the last frames' output, still to be added into later hops
        self.skip = pad  # the first hops come from frames that cover the padding only
        self.length = 0  # samples taken
        self.frames = 0  # frames filtered
        self.emitted = 0  # samples given back

    def add(self, piece: Tensor) -> Tensor:
        """Take the next samples (T,); return the output samples now final (float32)."""
        piece = torch.as_tensor(piece).detach().reshape(-1).to("cpu", torch.float32)
        self.length += len(piece)
        self.buffer = torch.cat([self.buffer, piece])
        parts = []
        while len(self.buffer) >= self._span(self.group):
            parts.append(self._filter(self.group))
        return self._overlap_add(parts, limit=None)

    def flush(self) -> Tensor:
        """The rest of the output: the clip's last frames run over zeros past its end."""
        left = math.ceil(self.length / self.hop) + OVERLAP - 1 - self.frames  # frames up to the last hop's fourth
        parts = []
        while left > 0:
            count = min(left, FRAMES_PER_GROUP)
            self.buffer = torch.cat([self.buffer, torch.zeros(max(0, self._span(count) - len(self.buffer)))])
            parts.append(self._filter(count))
            left -= count
        return self._overlap_add(parts, limit=self.length)

    # ----------------------------------------------------------------- internals
    def _span(self, frames: int) -> int:
        return (frames - 1) * self.hop + self.n

    def _filter(self, count: int) -> Tensor:
        """The next `count` frames, windowed, sharpened, windowed again: (count, n); the buffer moves past them."""
        frames = self.buffer[: self._span(count)].unfold(0, self.n, self.hop) * self.window
        self.buffer = self.buffer[count * self.hop:]
        self.frames += count
        spec = torch.fft.rfft(frames)
        power = spec.real.square() + spec.imag.square()  # |Y|^2, (F, bins)
        # |Y|^g rescaled to the frame's energy: Y times gain = |Y|^(g-1) * sqrt(sum |Y|^2 / sum |Y|^2g)
        gain = power.clamp_min(1e-30).log_().mul_((self.exponent - 1) / 2).exp_()
        sharp_energy = (power * gain.square()).sum(1, keepdim=True)
        gain *= (power.sum(1, keepdim=True) / sharp_energy.clamp_min(1e-30)).sqrt()
        return torch.fft.irfft(spec * gain, self.n) * self.window

    def _overlap_add(self, parts: list[Tensor], limit: int | None) -> Tensor:
        """Hop s of the output sums the OVERLAP frames over it, always in the same order (bit-identical output)."""
        if not parts:
            return torch.zeros(0)
        frames = torch.cat([self.tail, *parts])  # (OVERLAP - 1 + F, n), the kept frames first
        h, k = self.hop, OVERLAP
        # frame i's part j (its samples j h .. (j + 1) h) lies over output hop i - (k - 1) + j
        out = frames[k - 1:, :h].clone()
        for j in range(1, k):
            out += frames[k - 1 - j: len(frames) - j, j * h: (j + 1) * h]
        self.tail = frames[len(frames) - (k - 1):]
        audio = (out / self.envelope).reshape(-1)
        drop = min(self.skip, len(audio))
        audio, self.skip = audio[drop:], self.skip - drop
        if limit is not None:
            audio = audio[: max(0, limit - self.emitted)]
        self.emitted += len(audio)
        return audio


def sharpen(audio: Tensor, sample_rate: int, exponent: float) -> Tensor:
    """The postfilter over a whole mono clip (T,) -> (T,) float32."""
    post = Postfilter(sample_rate, exponent)
    return torch.cat([post.add(audio), post.flush()])
