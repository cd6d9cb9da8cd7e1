"""VQVAE: encoder -> EMA vector quantizer -> decoder, for waveforms or images."""

from __future__ import annotations

import math

from torch import Tensor, nn

from vqtok.tokenizer.base import Tokenizer, TokenizerConfig, TokenizerOutput, build_decoder
from vqtok.tokenizer.nets import Encoder
from vqtok.tokenizer.quantizer import VectorQuantizer
from vqtok.tokenizer.streaming import LevelPath, input_interval


class VQVAE(Tokenizer):
    """Single-level VQ-VAE (van den Oord et al. 2017). x: (B, C, T) or (B, C, H, W)."""

    def __init__(self, config: TokenizerConfig):
        super().__init__()
        self.config = config
        net, dims, act = config.net, config.dims, config.activation
        self.encoder = Encoder(dims, config.in_channels, net.channels, net.strides, net.code_dim, net.encoder_depth,
                               net.dilation_growth, act, net.encoder_stem)
        self.quantizer = VectorQuantizer(net.codebook_size, net.code_dim, config.quantizer)
        self.decoder = build_decoder(dims, net.code_dim, net, config.in_channels, act)
        self.level_strides = [math.prod(net.strides)]

    def encode_padded(self, x: Tensor,
                      fragile_rtol: float | None = None) -> list[Tensor] | tuple[list[Tensor], list[Tensor]]:
        """(B, C, *S) -> [codes (B, *S')]; with fragile_rtol also [fragile (B, *S') bool] (quantizer.encode)."""
        out = self.quantizer.encode(self.encoder(x), fragile_rtol=fragile_rtol)
        return [out] if fragile_rtol is None else ([out[0]], [out[1]])

    def decode_padded(self, codes: list[Tensor]) -> Tensor:
        return self.decoder(self.quantizer.decode(codes[0]))

    def decoder_modules(self) -> list[nn.Module]:
        return [self.decoder]

    def _forward_padded(self, x: Tensor, mask: Tensor | None) -> TokenizerOutput:
        q = self.quantizer(self.encoder(x), mask=self.code_mask(mask, self.level_strides[0]))
        return TokenizerOutput(recon=self.decoder(q.quantized), codes=[q.codes], commit_loss=q.commit_loss, quant=[q])

    def encode_paths(self) -> list[LevelPath]:
        """Code frames -> the input samples they depend on: x -> encoder -> quantizer."""
        return [LevelPath(self.downsample[0], lambda iv: input_interval(self.encoder, iv))]

    def decode_paths(self) -> list[LevelPath]:
        """Output samples -> the code frames they depend on: codes -> decoder."""
        return [LevelPath(self.downsample[0], lambda iv: input_interval(self.decoder, iv))]
