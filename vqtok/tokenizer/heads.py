"""IstftDecoder: a waveform decoder that stays at the code rate and ends in an inverse STFT (Vocos)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from einops import rearrange
from torch import Tensor, nn

from vqtok.tokenizer.nets import Decoder
from vqtok.tokenizer.receptive import Interval, input_interval, residual_interval
FFT_PER_HOP = 4  # n_fft = 4 hop: 75% window overlap, as Vocos and WavTokenizer use
MAX_LOG_MAGNITUDE = 6.0  # exp(6) ~ 400: a full-scale sinusoid peaks at n_fft/4 (50 at hop 50); keeps exp() finite


@dataclass
class HeadConfig:
    """The ConvNeXt stack of an `istft` decoder head (Vocos: width 512, 8 blocks, expand 3 at 94 frames/s).

    The default decodes a 320 frames/s, 16 kHz model about 90x faster than real time on one CPU thread
    (bench/encode.py); the cost grows as width^2 x blocks x frame rate (256 x 4: about 40x).
    """

    width: int = 128  # channels of the ConvNeXt blocks
    blocks: int = 4  # ConvNeXt blocks; each adds 3 code frames of receptive field on each side
    expand: int = 3  # hidden width of each block's pointwise MLP, as a multiple of `width`


class ConvNeXtBlock(nn.Module):
    """x + gamma * W2(gelu(W1(norm(dwconv(x))))): ConvNeXt (Liu et al. 2022) in 1-D, as in Vocos.

    Only the depthwise conv mixes time (7 frames); norm and MLP act per frame, over channels.
    """

    def __init__(self, channels: int, expand: int, layer_scale: float):
        super().__init__()
        self.dwconv = nn.Conv1d(channels, channels, 7, padding=3, groups=channels)
        self.norm = nn.LayerNorm(channels)
        self.pw1 = nn.Linear(channels, expand * channels)
        self.act = nn.GELU()
        self.pw2 = nn.Linear(expand * channels, channels)
        # layer scale (Touvron et al. 2021): small residual branches at init keep a deep stack stable
        self.gamma = nn.Parameter(torch.full((channels,), layer_scale))

    def forward(self, x: Tensor) -> Tensor:
        h = rearrange(self.dwconv(x), "b c t -> b t c")
        h = self.pw2(self.act(self.pw1(self.norm(h)))) * self.gamma
        return x + rearrange(h, "b t c -> b c t")

    def input_interval(self, out: Interval) -> Interval:  # the MLP acts per frame: the depthwise conv's reach
        return residual_interval(self.dwconv, out)


class ISTFT(nn.Module):
    """Complex spectra (B, T, F) -> waveforms (B, T * hop): windowed inverse FFT and overlap-add.

    n_fft = `ratio` x hop, periodic Hann window. Frame t covers output samples [t hop - left, t hop - left + n_fft)
    with left = (n_fft - hop) // 2, i.e. it is centred on the middle of hop t (Vocos' "same" padding), so T frames
    give exactly T * hop samples. The overlap-added frames are divided by the summed squared window (the
    least-squares inverse of an STFT with the same framing, as in torch.istft), which stays above zero at the
    clip edges too. Not torch.istft itself: center=True centres frames on t hop (one-sided around the code's
    hop), center=False refuses the zero window ends; and adding `ratio` shifted slices is cheaper than its fold.
    """

    def __init__(self, hop: int, ratio: int = FFT_PER_HOP):
        super().__init__()
        if ratio < 2:
            raise ValueError(f"n_fft must be at least twice the hop for overlap-add, got {ratio} x {hop}")
        self.hop, self.ratio, self.n_fft = hop, ratio, ratio * hop
        self.left = (self.n_fft - hop) // 2
        self.register_buffer("window", torch.hann_window(self.n_fft), persistent=False)

    @property
    def bins(self) -> int:
        return self.n_fft // 2 + 1

    def frames(self, out: tuple[int, int]) -> tuple[int, int]:
        """Frames that output samples [lo, hi] depend on: t hop <= o + left < t hop + n_fft."""
        lo, hi = out
        return -(-(lo + self.left - self.n_fft + 1) // self.hop), (hi + self.left) // self.hop

    def overlap_add(self, frames: Tensor) -> Tensor:
        """(B, T, n_fft) -> (B, (T + ratio - 1) hop): the sum of the frames placed at offsets t hop."""
        b, n, _ = frames.shape
        parts = frames.reshape(b, n, self.ratio, self.hop)  # (B, T, ratio, hop): piece k lands on hop t + k
        out = frames.new_zeros(b, n + self.ratio - 1, self.hop)
        for k in range(self.ratio):
            out[:, k : k + n] += parts[:, :, k]
        return out.reshape(b, -1)

    def forward(self, spec: Tensor) -> Tensor:
        n = spec.shape[1]
        window = self.window.float()
        wave = self.overlap_add(torch.fft.irfft(spec, n=self.n_fft, dim=-1) * window)  # (B, L)
        envelope = self.overlap_add((window**2).expand(1, n, -1))  # (1, L)
        a, b = self.left, self.left + n * self.hop
        return wave[:, a:b] / envelope[:, a:b]


class IstftDecoder(nn.Module):
    """(B, C_in, T) code-rate latents -> (B, C_out, T * hop) waveforms, with no layer above the code rate.

    Vocos (Siuzdak 2023), as WavTokenizer uses it: conv embedding, LayerNorm, ConvNeXt blocks, LayerNorm, then
    a linear map per frame to log-magnitudes and phases of an n_fft = 4 hop spectrum, inverted by `ISTFT`.
    """

    def __init__(self, in_channels: int, out_channels: int, hop: int, head: HeadConfig):
        super().__init__()
        self.embed = nn.Conv1d(in_channels, head.width, 7, padding=3)
        self.norm = nn.LayerNorm(head.width)
        # Vocos' layer-scale init: 1 / blocks
        self.blocks = nn.Sequential(*[ConvNeXtBlock(head.width, head.expand, 1 / head.blocks)
                                      for _ in range(head.blocks)])
        self.final_norm = nn.LayerNorm(head.width)
        self.istft = ISTFT(hop)
        self.out_channels = out_channels
        self.proj = nn.Linear(head.width, out_channels * 2 * self.istft.bins)
        self.stride = hop

    def forward(self, x: Tensor) -> Tensor:
        h = rearrange(self.embed(x), "b c t -> b t c")
        h = rearrange(self.norm(h), "b t c -> b c t")
        h = rearrange(self.blocks(h), "b c t -> b t c")
        h = self.proj(self.final_norm(h))  # (B, T, C_out * 2 * bins)
        # The spectrum and its inverse in fp32 whatever the autocast: exp() and the FFT are not for bf16.
        with torch.autocast(device_type=x.device.type, enabled=False):
            return self.spectrum_to_wave(*h.float().chunk(2, dim=-1))

    def input_interval(self, out: Interval) -> Interval:  # embed conv -> ConvNeXt blocks -> frames -> overlap-add
        return input_interval(self.embed, input_interval(self.blocks, self.istft.frames(out)))

    def spectrum_to_wave(self, log_mag: Tensor, phase: Tensor) -> Tensor:
        """Log-magnitudes and phases (B, T, C_out * bins), fp32 -> waveforms (B, C_out, T * hop)."""
        spec = torch.polar(torch.exp(log_mag.clamp(max=MAX_LOG_MAGNITUDE)), phase)
        spec = rearrange(spec, "b t (c f) -> (b c) t f", c=self.out_channels)
        wave = self.istft(spec)  # (B * C_out, T * hop)
        return rearrange(wave, "(b c) s -> b c s", c=self.out_channels)


# ------------------------------------------------------------------ the decoder heads a LevelConfig names
# (dims, in_channels, the level's base.LevelConfig, out_channels, activation name) -> the decoder module
HeadBuilder = Callable[[int, int, Any, int, str], nn.Module]


def conv_decoder(dims: int, in_channels: int, level: Any, out_channels: int, act: str) -> nn.Module:
    """The encoder's mirror: transposed convs up to the sample rate (nets.Decoder)."""
    return Decoder(dims, in_channels, level.channels, level.strides, out_channels, level.decoder_depth,
                   level.dilation_growth, act)


def istft_decoder(dims: int, in_channels: int, level: Any, out_channels: int, act: str) -> nn.Module:
    """ConvNeXt blocks at the code rate and an inverse STFT (`IstftDecoder`), audio only."""
    if level.decoder_res_depth is not None:
        raise ValueError("decoder_res_depth sizes the 'conv' decoder; the istft head's size is `head`")
    if dims != 1:
        raise ValueError("decoder_head 'istft' is for audio (dims 1); images take 'conv'")
    return IstftDecoder(in_channels, out_channels, math.prod(level.strides), level.head)


# name -> builder of a (B, in_channels, *S) -> (B, out_channels, *S * prod(strides)) module. A new head is its
# module (with an `input_interval(out)` method unless it is built from torch's layers alone: receptive.py) and
# one line here.
DECODER_HEADS: dict[str, HeadBuilder] = {"conv": conv_decoder, "istft": istft_decoder}


def build_decoder(dims: int, in_channels: int, level: Any, out_channels: int, act: str) -> nn.Module:
    """The decoder `level.decoder_head` names."""
    try:
        builder = DECODER_HEADS[level.decoder_head]
    except KeyError:
        raise ValueError(f"unknown decoder_head '{level.decoder_head}'; choose one of "
                         f"{', '.join(DECODER_HEADS)}") from None
    return builder(dims, in_channels, level, out_channels, act)
