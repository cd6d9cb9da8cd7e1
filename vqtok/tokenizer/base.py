"""Tokenizer config schema and the base class every tokenizer shares (properties, padding, verbs)."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vqtok.codefile import LEVEL_NAMES
from vqtok import speech_level
from vqtok.tokenizer import streaming
from vqtok.tokenizer.stream import StreamDecoder, StreamEncoder
from vqtok.tokenizer.postfilter import sharpen
from vqtok.tokenizer.heads import DECODER_HEADS, HeadConfig, build_decoder  # noqa: F401 (models build here)
from vqtok.tokenizer.nets import max_pool
from vqtok.tokenizer.quantizer import QuantizerConfig, QuantizerOutput



def level_names(levels: int) -> list[str]:
    return list(LEVEL_NAMES[levels])


@dataclass
class LevelConfig:
    """One level of a tokenizer: the encoder/decoder stages and its codebook."""

    channels: list[int] = field(default_factory=lambda: [64, 128])  # width after each downsampling stage
    strides: list[int] = field(default_factory=lambda: [2, 2])  # per-stage stride
    res_depth: int = 2  # residual blocks per stage
    encoder_res_depth: int | None = None  # the encoder's, when lighter than the decoder's (None: res_depth)
    # the output decoder's, when deeper than the encoder's (None: res_depth); a decoder-only stage can deepen a
    # trained decoder (--init-from) and keep its codes: it is left out of the codes fingerprint
    decoder_res_depth: int | None = None
    dilation_growth: int = 1  # dilations 1, g, g^2, ... inside a stage (3 for waveforms, 1 for images)
    code_dim: int = 64  # codebook vector size
    codebook_size: int = 512
    encoder_stem: str = "conv"  # "patch" (audio): the first stride folds samples into channels (nets.Encoder)
    # "conv": the encoder's mirror (transposed convs up to the sample rate); "istft" (audio): ConvNeXt blocks at
    # the code rate and an inverse STFT (Vocos, heads.py), several times cheaper on CPU
    decoder_head: str = "conv"
    head: HeadConfig = field(default_factory=HeadConfig)  # the istft head's size (unused by "conv")
    codebooks: int = 1  # residual VQ stages of this level (arch "stacked": a prefix of them decodes)
    quantizer_dropout: float = 0.0  # share of training items that use a random prefix of the stages (rvq.py)
    activation: str | None = None  # this level's own activation (None: the tokenizer's)

    @property
    def encoder_depth(self) -> int:
        return self.res_depth if self.encoder_res_depth is None else self.encoder_res_depth

    @property
    def decoder_depth(self) -> int:
        return self.res_depth if self.decoder_res_depth is None else self.decoder_res_depth


@dataclass
class TokenizerConfig:
    """Everything needed to rebuild a tokenizer; stored as JSON inside every checkpoint."""

    # "vqvae" (one level), "vqvae2" (top + bottom) or "stacked" (net's encoder and decoder around a low-rate
    # residual-VQ level `top`)
    arch: str = "vqvae"
    dims: int = 2  # 1: waveforms (B, C, T); 2: images (B, C, H, W)
    in_channels: int = 1
    sample_rate: int | None = None  # audio only
    net: LevelConfig = field(default_factory=LevelConfig)  # the only level, or the bottom of a VQ-VAE-2
    top: LevelConfig | None = None  # VQ-VAE-2's top level, applied to the bottom encoder's features
    quantizer: QuantizerConfig = field(default_factory=QuantizerConfig)
    activation: str = "elu"
    # audio: the speech level (gated RMS, dBFS; speech_level.py) `vqtok encode` brings each clip to before encoding,
    # keeping the gain in the token file for `vqtok decode` to undo; None: clips are encoded as they are
    level_db: float | None = None
    # audio: `decode` ends with a spectral sharpening postfilter (postfilter.py) of this exponent (> 1 sharpens);
    # None: the decoder's output as it is. Training and its losses never see it.
    postfilter: float | None = None


@dataclass
class TokenizerOutput:
    """forward() result. Per-level lists run top (coarse) to bottom (fine)."""

    recon: Tensor  # same shape as the input
    codes: list[Tensor]  # (B, *code_shape) int64 per level
    commit_loss: Tensor  # summed over levels (already weighted by beta)
    quant: list[QuantizerOutput]  # per-level quantizer outputs: perplexity, usage, revived


class Tokenizer(nn.Module):
    """Shared behaviour: properties a consumer needs, input layout, padding to the total stride.

    Subclasses define `level_strides` (total stride per level, top first) and `encode_padded`,
    `decode_padded`, `_forward_padded` on inputs whose size is a multiple of `hop`, and describe their data
    flow for the block-wise code in streaming.py: `encode_paths` and `decode_paths`.
    """

    config: TokenizerConfig
    fingerprint: str | None = None  # set by save_tokenizer/load_tokenizer: hash of config + weights
    codes_fingerprint: str | None = None  # likewise: hash of config + what makes the codes (all but the decoder)
    same_codes_as: tuple[str, ...] = ()  # fingerprints of earlier versions with these codes (a shipped file's list)
    # encode_padded(x, fragile_rtol) can mark the frames a batch's float rounding could flip, so batched encoding
    # re-encodes alone only the windows holding one (streaming.encode_windows_batched); False: every window alone
    marks_fragile_codes: bool = True
    input_dims: tuple[int, ...] = (1, 2)  # the config dims this architecture builds for (build_tokenizer checks)

    # ------------------------------------------------------------ properties
    @property
    def dims(self) -> int:
        return self.config.dims

    @property
    def levels(self) -> int:
        return len(self.level_strides)

    @property
    def level_names(self) -> list[str]:
        """Top first: ["codes"] for one level, ["top", "bottom"] for a VQ-VAE-2."""
        return level_names(self.levels)

    @property
    def level_configs(self) -> list[LevelConfig]:
        """Top first."""
        return [self.config.top, self.config.net] if self.config.top is not None else [self.config.net]

    @property
    def codebook_size(self) -> tuple[int, ...]:
        """Codebook size per level, top first."""
        return tuple(c.codebook_size for c in self.level_configs)

    @property
    def codebooks(self) -> int:
        """Codes per frame: a multi-codebook tokenizer's residual stages (its codes are (Q, T')), else 1."""
        return 1

    @property
    def downsample(self) -> tuple[int, ...]:
        """Input samples (or pixels per side) per code, per level, top first."""
        return tuple(self.level_strides)

    @property
    def hop(self) -> int:
        """Inputs are padded to a multiple of this along each axis."""
        return max(self.level_strides)

    @property
    def level_db(self) -> float | None:
        """The speech level `vqtok encode` brings audio to first (`TokenizerConfig.level_db`); None: as it is."""
        return self.config.level_db

    @property
    def postfilter(self) -> float | None:
        """The exponent of the postfilter `decode` and `decode_long` end with (`TokenizerConfig.postfilter`)."""
        return self.config.postfilter

    @property
    def sample_rate(self) -> int | None:
        return self.config.sample_rate

    @property
    def frame_rate(self) -> tuple[float, ...] | None:
        """Codes per second per level (audio only)."""
        if self.sample_rate is None:
            return None
        return tuple(self.sample_rate / d for d in self.downsample)

    @property
    def bitrate(self) -> float | None:
        """Bits per second over all levels (audio only): sum of frame_rate * log2(K)."""
        if self.frame_rate is None:
            return None
        return float(sum(f * math.log2(k) for f, k in zip(self.frame_rate, self.codebook_size)))

    def code_shape(self, input_shape: int | tuple[int, ...]) -> list[tuple[int, ...]]:
        """Code map shape per level (top first) for an input of the given spatial size.

        `input_shape` is the length T (audio) or (H, W) (images), without batch and channel axes.
        """
        size = (input_shape,) if isinstance(input_shape, int) else tuple(input_shape)
        if len(size) != self.dims:
            raise ValueError(f"expected a {self.dims}-D size, got {size}")
        padded = [math.ceil(s / self.hop) * self.hop for s in size]
        return [tuple(p // d for p in padded) for d in self.downsample]

    # ----------------------------------------------------------------- verbs
    def encode(self, x: Tensor | np.ndarray) -> Tensor | list[Tensor]:
        """Input -> codes. Batched (B, C, *S) gives (B, *S'); unbatched (C, *S) or (*S) gives (*S').

        Single-level tokenizers return a tensor, VQ-VAE-2 a list [top, bottom].
        """
        x, batched = self.as_batch(x)
        with torch.no_grad():  # codes carry no gradient, and the encoder runs faster without autograd
            codes = self.encode_padded(self.pad(x))  # per level, top first
        codes = codes if batched else [c[0] for c in codes]
        return codes[0] if self.levels == 1 else codes

    def decode(self, codes: Tensor | list[Tensor], size: int | tuple[int, ...] | None = None,
               postfilter: bool = True) -> Tensor:
        """Codes -> output (B, C, *S) (or (C, *S) for unbatched codes), trimmed to `size` if given.

        Audio ends with the tokenizer's postfilter, if it has one (`postfilter=False`: the decoder's output as is,
        with its autograd graph; the postfilter is not differentiable).
        """
        levels = [codes] if isinstance(codes, (Tensor, np.ndarray)) else list(codes)
        if len(levels) != self.levels:
            raise ValueError(f"expected codes for {self.levels} level(s), got {len(levels)}")
        device = self.device
        levels = [torch.as_tensor(c, device=device).long() for c in levels]
        batched = levels[-1].dim() == self.dims + 1
        if not batched:
            levels = [c[None] for c in levels]
        out = self.decode_padded(levels)
        out = self._finish(out, size, postfilter)
        return out if batched else out[0]

    def _finish(self, out: Tensor, size: int | tuple[int, ...] | None, postfilter: bool) -> Tensor:
        """Decoder output (B, C, *S) -> trimmed to `size`, through the postfilter (audio, if the model has one)."""
        if size is not None:
            out = self._trim(out, (size,) if isinstance(size, int) else tuple(size))
        if postfilter and self.postfilter is not None:
            with torch.no_grad():
                flat = out.detach().reshape(-1, out.shape[-1]).cpu()
                out = torch.stack([sharpen(y, self.sample_rate, self.postfilter) for y in flat]).reshape(out.shape)
            out = out.to(self.device)
        return out

    def decoder_modules(self) -> list[nn.Module]:
        """The modules between the codes and the output: what `decode_padded` runs after the codebook lookup."""
        raise NotImplementedError

    def forward(self, x: Tensor, mask: Tensor | None = None) -> TokenizerOutput:
        """x: (B, C, *S); mask (audio): (B, 1, T), 1 on real samples, keeps padding out of the codebook."""
        size = tuple(x.shape[2:])
        xp = self.pad(x)
        mp = None if mask is None else self.pad(mask.float())
        out = self._forward_padded(xp, mp)
        out.recon = self._trim(out.recon, size)
        return out

    # ------------------------------------------- long audio, batches, time (see streaming.py)
    @functools.cached_property
    def context(self):
        """Receptive fields in whole hops: `encode_left/right` (samples), `decode_left/right` (hops); audio only."""
        return streaming.compute_context(self)

    @functools.cached_property
    def block_frames(self) -> int:
        """Hops per canonical block of `encode_long` / `decode_long` (about four seconds of audio)."""
        return streaming.block_frames(self)

    def encode_long(self, x: Tensor | np.ndarray, chunk_seconds: float | None = None) -> Tensor | list[Tensor]:
        """Unbatched mono audio (T,) of any length -> codes like `encode`, in bounded memory.

        Codes are computed block by block (streaming.py) and are bit-identical for every `chunk_seconds`
        (how much audio is handed over at a time); a clip of at most one block gives exactly `encode`'s.
        """
        wav = self._mono(x)
        size = None if not chunk_seconds else max(1, round(chunk_seconds * self.sample_rate))
        parts = list(streaming.stream_encode(self, streaming.split_pieces(wav.numpy(), size)))
        levels = [torch.from_numpy(c).to(self.device) for c in streaming.join_levels(parts, self.levels)]
        return levels[0] if self.levels == 1 else levels

    def decode_long(self, codes: Tensor | np.ndarray | Sequence, size: int | None = None,
                    chunk_seconds: float | None = None, postfilter: bool = True) -> Tensor:
        """Unbatched codes (as `encode_long` returns) -> (1, T) audio, block by block, trimmed to `size`.

        Equal to `decode` to float tolerance, and bit-identical for every `chunk_seconds`; the postfilter as in
        `decode`.
        """
        levels = [codes] if isinstance(codes, (Tensor, np.ndarray)) else list(codes)
        if len(levels) != self.levels:
            raise ValueError(f"expected codes for {self.levels} level(s), got {len(levels)}")
        levels = [torch.as_tensor(np.asarray(c.cpu() if isinstance(c, Tensor) else c)).long() for c in levels]
        hops = None if not chunk_seconds else max(1, round(chunk_seconds * self.sample_rate / self.hop))
        pieces = list(streaming.stream_decode(self, levels, size, hops, postfilter=postfilter))
        wav = np.concatenate(pieces) if pieces else np.zeros(0, np.float32)
        return torch.from_numpy(wav)[None].to(self.device)

    def stream_encoder(self, gain_db: float = 0.0) -> StreamEncoder:
        """Live encoding: push audio chunks of any size, get codes as soon as they are final (stream.py)."""
        return StreamEncoder(self, gain_db)

    def stream_decoder(self, postfilter: bool = True) -> StreamDecoder:
        """Live decoding: push codes, get audio as soon as it is final (stream.py)."""
        return StreamDecoder(self, postfilter)

    def encode_batch(self, items: Sequence[Tensor | np.ndarray], batch_size: int | None = None) -> list:
        """Encode clips (T,) or images (C, H, W) of different sizes together, `batch_size` windows at a time.

        Returns one entry per item, exactly what `encode_long` (audio) or `encode` (images) gives it alone.
        """
        if self.sample_rate is not None:  # audio: each clip to (T,)
            items = [self._mono(x) for x in items]
        with torch.no_grad():
            return streaming.encode_batch(self, list(items), batch_size)

    def at_level(self, x: Tensor | np.ndarray) -> tuple[Tensor, float]:
        """Mono audio (T,) brought to `level_db` as `vqtok encode` brings each file (speech_level.py), and the gain
        in dB that did it (0 without a `level_db`); multiply the decoded audio by 10^(-gain/20) to undo it."""
        wav = self._mono(x)
        if self.level_db is None:
            return wav, 0.0
        audio, gain = speech_level.to_level(wav.numpy(), self.sample_rate, self.level_db)
        return torch.from_numpy(audio), gain

    def frames_to_seconds(self, frames: int | float, level: int = -1) -> float:
        """Seconds spanned by `frames` codes of `level` (default: the finest); also frame n's start time."""
        return frames * self.downsample[level] / self._rate()

    def seconds_to_frames(self, seconds: float, level: int = -1) -> int:
        """Codes of `level` that `encode` gives for `seconds` of audio (the clip is padded to whole hops)."""
        samples = math.ceil(round(seconds * self._rate(), 6))
        return self.code_shape(samples)[level][-1] if samples > 0 else 0  # time: the last axis

    def _rate(self) -> int:
        if self.sample_rate is None:
            raise ValueError("frames_to_seconds / seconds_to_frames need an audio tokenizer with a sample_rate")
        return self.sample_rate

    def _mono(self, x: Tensor | np.ndarray) -> Tensor:
        """Audio (T,), (1, T) or (1, 1, T) -> float32 (T,) on the CPU."""
        if self.sample_rate is None:
            raise ValueError("encode_long / decode_long are for audio (dims=1) tokenizers")
        t = torch.as_tensor(np.asarray(x.detach().cpu()) if isinstance(x, Tensor) else np.asarray(x))
        if t.dim() > 1 and all(n == 1 for n in t.shape[:-1]):
            t = t.reshape(-1)
        if t.dim() != 1:
            raise ValueError(f"expected one mono clip (T,), got shape {tuple(t.shape)}")
        return t.float()

    # -------------------------------------------------------------- helpers
    @property
    def device(self) -> torch.device:
        """Where the weights live (inputs are moved there)."""
        return next(self.parameters()).device

    def as_batch(self, x: Tensor | np.ndarray) -> tuple[Tensor, bool]:
        """Any input layout -> ((B, C, *S) float on this device, whether the input had a batch axis)."""
        x = torch.as_tensor(x, device=self.device)
        if not x.is_floating_point():
            x = x.float()
        if x.dim() == self.dims + 2:
            return x, True
        if x.dim() == self.dims + 1:
            return x[None], False
        if x.dim() == self.dims and self.config.in_channels == 1:
            return x[None, None], False
        raise ValueError(f"expected input (B, C, *S) with {self.dims} spatial axes, got shape {tuple(x.shape)}")

    def pad(self, x: Tensor) -> Tensor:
        """Zero-pad the end of every spatial axis up to a multiple of `hop`."""
        pads: list[int] = []
        for s in reversed(x.shape[2:]):  # F.pad takes the last axis first
            pads += [0, (-s) % self.hop]
        return F.pad(x, pads) if any(pads) else x

    @staticmethod
    def _trim(x: Tensor, size: tuple[int, ...]) -> Tensor:
        index = (slice(None), slice(None)) + tuple(slice(0, s) for s in size)
        return x[index]

    def code_mask(self, mask: Tensor | None, stride: int) -> Tensor | None:
        """Sample mask (B, 1, *S) -> code mask (B, 1, *S/stride): a frame counts if any of its samples does."""
        if mask is None:
            return None
        return max_pool(self.dims, mask, stride) > 0
