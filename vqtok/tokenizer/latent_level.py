"""LatentLevel: a low-rate residual-VQ level over a trained tokenizer's latents (VQ-VAE-2's idea, stacked on top)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from vqtok.tokenizer.nets import Decoder, Encoder
from vqtok.tokenizer.quantizer import QuantizerConfig, QuantizerOutput
from vqtok.tokenizer.rvq import ResidualVQ


class LatentLevel(nn.Module):
    """(B, D, T) base latents -> codes (B, Q, T / stride) -> (B, D, T) latents for the base decoder.

    A conv encoder takes the latents down by prod(level.strides), a residual VQ of `level.codebooks` stages
    quantizes them, the mirror decoder brings them back up. The input is standardised with fixed per-channel
    statistics of the training latents (`mean`, `std` buffers) and the output brought back to the base latents'
    scale, so the level's losses and learning rates do not depend on the base model's latent scale.
    `level` is a LevelConfig (base.py), taken as duck-typed fields to keep this module below base.py.
    """

    def __init__(self, latent_dim: int, level, quantizer: QuantizerConfig, activation: str):
        super().__init__()
        self.encoder = Encoder(1, latent_dim, level.channels, level.strides, level.code_dim, level.encoder_depth,
                               level.dilation_growth, activation, "conv")
        self.quantizer = ResidualVQ(level.codebooks, level.codebook_size, level.code_dim, quantizer,
                                    level.quantizer_dropout)
        self.decoder = Decoder(1, level.code_dim, level.channels, level.strides, latent_dim, level.decoder_depth,
                               level.dilation_growth, activation)
        self.register_buffer("mean", torch.zeros(latent_dim))
        self.register_buffer("std", torch.ones(latent_dim))
        self.stride = math.prod(level.strides)

    def encode(self, z: Tensor, codebooks: int | None = None) -> Tensor:
        """(B, D, T) base latents, T a multiple of `stride` -> (B, n, T / stride) codes of the first n stages."""
        return self.quantizer.encode(self.encoder(self._standardise(z)), codebooks)

    def decode(self, codes: Tensor, prefixes: Tensor | None = None) -> Tensor:
        """(B, n, T') codes of the first n stages -> (B, D, T' * stride) latents for the base decoder.
        prefixes (B,): item i decodes only its first prefixes[i] stages (ResidualVQ.decode)."""
        return self._restore(self.decoder(self.quantizer.decode(codes, prefixes)))

    def forward(self, z: Tensor, codebooks: int | None = None) -> tuple[Tensor, QuantizerOutput]:
        q = self.quantizer(self.encoder(self._standardise(z)), codebooks=codebooks)
        return self._restore(self.decoder(q.quantized)), q

    def _standardise(self, z: Tensor) -> Tensor:
        return (z - self.mean[:, None]) / self.std[:, None]

    def _restore(self, y: Tensor) -> Tensor:
        return y * self.std[:, None] + self.mean[:, None]
