"""Stacked: a base VQ-VAE's encoder and decoder with a low-rate residual-VQ level between them (multi-codebook)."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn

from vqtok.tokenizer.base import Tokenizer, TokenizerConfig, TokenizerOutput, build_decoder
from vqtok.tokenizer.latent_level import LatentLevel
from vqtok.tokenizer.nets import Encoder
from vqtok.tokenizer.streaming import LevelPath, input_interval


class Stacked(Tokenizer):
    """x -> base encoder (`net`) -> latents -> LatentLevel (`top`: down, residual VQ, up) -> base decoder -> x.

    The base encoder's continuous latents go into the level; the level's output stands in for the base quantizer's
    vectors the decoder was trained on. Codes: (B, Q, T') for the Q = `top.codebooks` residual stages, one frame
    per `downsample[0]` samples; any prefix of the stages decodes (`encode(x, codebooks=n)`, `decode(codes[:n])`).
    """

    def __init__(self, config: TokenizerConfig):
        super().__init__()
        if config.top is None:
            raise ValueError("arch 'stacked' needs a 'top' level config (the low-rate level)")
        self.config = config
        net, top, act = config.net, config.top, config.activation
        self.encoder = Encoder(1, config.in_channels, net.channels, net.strides, net.code_dim, net.encoder_depth,
                               net.dilation_growth, act, net.encoder_stem)
        self.level = LatentLevel(net.code_dim, top, config.quantizer, top.activation or act)
        self.decoder = build_decoder(1, net.code_dim, net, config.in_channels, act)
        self.level_strides = [math.prod(net.strides) * math.prod(top.strides)]

    @property
    def codebooks(self) -> int:
        """Residual stages per frame: a token file holds (Q, T) codes, or a prefix (n, T)."""
        return self.level.quantizer.codebooks

    @property
    def codebook_size(self) -> tuple[int, ...]:
        return (self.config.top.codebook_size,)

    @property
    def bitrate(self) -> float | None:
        """Bits per second with all the codebooks; `bitrate_at(n)` for a prefix."""
        return self.bitrate_at(self.codebooks)

    def code_shape(self, input_shape: int | tuple[int, ...]) -> list[tuple[int, ...]]:
        """[(Q, T')]: every codebook's frames for an input of `input_shape` samples."""
        return [(self.codebooks, *shape) for shape in super().code_shape(input_shape)]

    def bitrate_at(self, codebooks: int) -> float:
        return self.frame_rate[0] * codebooks * math.log2(self.codebook_size[0])

    # ----------------------------------------------------------------- verbs
    def encode(self, x: Tensor | np.ndarray, codebooks: int | None = None) -> Tensor:
        """Audio (B, 1, T) -> (B, n, T'), or (T,) / (1, T) -> (n, T'), for the first n = `codebooks` stages."""
        x, batched = self.as_batch(x)
        with torch.no_grad():
            codes = self.level.encode(self.encoder(self.pad(x)), codebooks)
        return codes if batched else codes[0]

    def decode(self, codes: Tensor | np.ndarray | list, size: int | tuple[int, ...] | None = None,
               postfilter: bool = True) -> Tensor:
        """Codes (B, n, T') or (n, T') of any prefix n -> audio (B, 1, T) or (1, T), trimmed to `size`."""
        if isinstance(codes, (list, tuple)):
            if len(codes) != 1:
                raise ValueError(f"expected codes for 1 level, got {len(codes)}")
            codes = codes[0]
        codes = torch.as_tensor(np.asarray(codes) if isinstance(codes, np.ndarray) else codes, device=self.device)
        if codes.dim() not in (2, 3):
            raise ValueError(f"expected codes (n, T') or (B, n, T'), got shape {tuple(codes.shape)}")
        batched = codes.dim() == 3
        out = self.decode_padded([codes.long() if batched else codes.long()[None]])
        out = self._finish(out, size, postfilter)
        return out if batched else out[0]

    # A residual stage's input moves with every earlier stage's choice: no per-frame bound says which batched codes
    # are what a clip gets alone, so batched encoding takes each window alone (streaming.encode_windows_batched).
    marks_fragile_codes = False
    input_dims = (1,)  # waveforms: the level works on a 1-D latent sequence

    def encode_padded(self, x: Tensor) -> list[Tensor]:
        """(B, 1, T) -> [codes (B, Q, T')]."""
        return [self.level.encode(self.encoder(x))]

    def decode_padded(self, codes: list[Tensor]) -> Tensor:
        return self.decoder(self.level.decode(codes[0]))

    def decoder_modules(self) -> list[nn.Module]:
        return [self.level.decoder, self.decoder]

    def _forward_padded(self, x: Tensor, mask: Tensor | None) -> TokenizerOutput:
        latents, q = self.level(self.encoder(x))
        return TokenizerOutput(recon=self.decoder(latents), codes=[q.codes], commit_loss=q.commit_loss, quant=[q])

    def encode_paths(self) -> list[LevelPath]:
        """Code frames -> input samples: x -> base encoder -> level encoder -> residual VQ (per frame)."""
        return [LevelPath(self.downsample[0],
                          lambda iv: input_interval(self.encoder, input_interval(self.level.encoder, iv)))]

    def decode_paths(self) -> list[LevelPath]:
        """Output samples -> code frames: codes -> level decoder -> base decoder."""
        return [LevelPath(self.downsample[0],
                          lambda iv: input_interval(self.level.decoder, input_interval(self.decoder, iv)))]
