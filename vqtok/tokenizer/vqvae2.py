"""VQVAE2: hierarchical tokenizer with top and bottom codes, the bottom conditioned on the top."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from vqtok.tokenizer.base import Tokenizer, TokenizerConfig, TokenizerOutput
from vqtok.tokenizer.nets import Decoder, Encoder, conv, upsample
from vqtok.tokenizer.quantizer import VectorQuantizer


class VQVAE2(Tokenizer):
    """Two-level VQ-VAE (Razavi et al. 2019).

    x -> enc_b -> h_b (bottom resolution) -> enc_t -> quant_t -> top codes.
    The decoded top map dec_t(q_t) is concatenated with h_b before the bottom quantizer, so the bottom
    codes only carry what the top ones miss. The decoder sees [up_t(q_t), q_b] at bottom resolution.
    """

    def __init__(self, config: TokenizerConfig):
        super().__init__()
        if config.top is None:
            raise ValueError("arch 'vqvae2' needs a 'top' level config")
        self.config = config
        bot, top, dims, act = config.net, config.top, config.dims, config.activation
        c_b = bot.channels[-1]
        self.enc_b = Encoder(dims, config.in_channels, bot.channels, bot.strides, c_b, bot.res_depth, bot.dilation_growth, act)
        self.enc_t = Encoder(dims, c_b, top.channels, top.strides, top.code_dim, top.res_depth, top.dilation_growth, act)
        self.quant_t = VectorQuantizer(top.codebook_size, top.code_dim, config.quantizer)
        self.dec_t = Decoder(dims, top.code_dim, top.channels, top.strides, bot.code_dim, top.res_depth, top.dilation_growth, act)
        self.proj_b = conv(dims, c_b + bot.code_dim, bot.code_dim, 1)
        self.quant_b = VectorQuantizer(bot.codebook_size, bot.code_dim, config.quantizer)
        self.up_t = upsample(dims, top.code_dim, bot.code_dim, math.prod(top.strides))
        self.decoder = Decoder(
            dims, 2 * bot.code_dim, bot.channels, bot.strides, config.in_channels, bot.res_depth, bot.dilation_growth, act
        )
        s_b = math.prod(bot.strides)
        self.level_strides = [s_b * math.prod(top.strides), s_b]  # top first

    def _decode_latents(self, q_t: Tensor, q_b: Tensor) -> Tensor:
        return self.decoder(torch.cat([self.up_t(q_t), q_b], 1))

    def _encode_padded(self, x: Tensor) -> list[Tensor]:
        h_b = self.enc_b(x)
        codes_t = self.quant_t.encode(self.enc_t(h_b))
        q_t = self.quant_t.decode(codes_t)
        codes_b = self.quant_b.encode(self.proj_b(torch.cat([h_b, self.dec_t(q_t)], 1)))
        return [codes_t, codes_b]

    def _decode_padded(self, codes: list[Tensor]) -> Tensor:
        return self._decode_latents(self.quant_t.decode(codes[0]), self.quant_b.decode(codes[1]))

    def _forward_padded(self, x: Tensor, mask: Tensor | None) -> TokenizerOutput:
        h_b = self.enc_b(x)
        qt = self.quant_t(self.enc_t(h_b), mask=self._code_mask(mask, self.level_strides[0]))
        z_b = self.proj_b(torch.cat([h_b, self.dec_t(qt.quantized)], 1))
        qb = self.quant_b(z_b, mask=self._code_mask(mask, self.level_strides[1]))
        return TokenizerOutput(
            recon=self._decode_latents(qt.quantized, qb.quantized),
            codes=[qt.codes, qb.codes],
            commit_loss=qt.commit_loss + qb.commit_loss,
            quant=[qt, qb],
        )
