"""VQVAE2: hierarchical tokenizer with top and bottom codes, the bottom conditioned on the top."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from vqtok.tokenizer.base import Tokenizer, TokenizerConfig, TokenizerOutput, build_decoder
from vqtok.tokenizer.nets import Decoder, Encoder, conv, upsample
from vqtok.tokenizer.quantizer import VectorQuantizer
from vqtok.tokenizer.streaming import Interval, LevelPath, input_interval


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
        if config.top.decoder_head != "conv":  # the top level decodes to latents, not to audio
            raise ValueError("top.decoder_head must be 'conv'; set net.decoder_head for the output decoder")
        if config.top.decoder_res_depth is not None:  # likewise: its decoder is part of what makes the codes
            raise ValueError("top.decoder_res_depth is not used; set net.decoder_res_depth for the output decoder")
        self.config = config
        bot, top, dims, act = config.net, config.top, config.dims, config.activation
        c_b = bot.channels[-1]
        self.enc_b = Encoder(dims, config.in_channels, bot.channels, bot.strides, c_b, bot.encoder_depth,
                             bot.dilation_growth, act, bot.encoder_stem)
        self.enc_t = Encoder(dims, c_b, top.channels, top.strides, top.code_dim, top.encoder_depth,
                             top.dilation_growth, act, top.encoder_stem)
        self.quant_t = VectorQuantizer(top.codebook_size, top.code_dim, config.quantizer)
        self.dec_t = Decoder(dims, top.code_dim, top.channels, top.strides, bot.code_dim, top.res_depth, top.dilation_growth, act)
        self.proj_b = conv(dims, c_b + bot.code_dim, bot.code_dim, 1)
        self.quant_b = VectorQuantizer(bot.codebook_size, bot.code_dim, config.quantizer)
        self.up_t = upsample(dims, top.code_dim, bot.code_dim, math.prod(top.strides))
        self.decoder = build_decoder(dims, 2 * bot.code_dim, bot, config.in_channels, act)
        s_b = math.prod(bot.strides)
        self.level_strides = [s_b * math.prod(top.strides), s_b]  # top first

    def _decode_latents(self, q_t: Tensor, q_b: Tensor) -> Tensor:
        return self.decoder(torch.cat([self.up_t(q_t), q_b], 1))

    def encode_padded(self, x: Tensor,
                      fragile_rtol: float | None = None) -> list[Tensor] | tuple[list[Tensor], list[Tensor]]:
        """(B, C, *S) -> [top, bottom] codes; with fragile_rtol also where each is fragile (quantizer.encode)."""
        h_b = self.enc_b(x)
        top = self.quant_t.encode(self.enc_t(h_b), fragile_rtol=fragile_rtol)
        codes_t = top if fragile_rtol is None else top[0]
        q_t = self.quant_t.decode(codes_t)
        bottom = self.quant_b.encode(self.proj_b(torch.cat([h_b, self.dec_t(q_t)], 1)), fragile_rtol=fragile_rtol)
        if fragile_rtol is not None:
            return [codes_t, bottom[0]], [top[1], bottom[1]]
        return [codes_t, bottom]

    def decode_padded(self, codes: list[Tensor]) -> Tensor:
        return self._decode_latents(self.quant_t.decode(codes[0]), self.quant_b.decode(codes[1]))

    def decoder_modules(self) -> list[nn.Module]:
        return [self.up_t, self.decoder]

    def _forward_padded(self, x: Tensor, mask: Tensor | None) -> TokenizerOutput:
        h_b = self.enc_b(x)
        qt = self.quant_t(self.enc_t(h_b), mask=self.code_mask(mask, self.level_strides[0]))
        z_b = self.proj_b(torch.cat([h_b, self.dec_t(qt.quantized)], 1))
        qb = self.quant_b(z_b, mask=self.code_mask(mask, self.level_strides[1]))
        return TokenizerOutput(
            recon=self._decode_latents(qt.quantized, qb.quantized),
            codes=[qt.codes, qb.codes],
            commit_loss=qt.commit_loss + qb.commit_loss,
            quant=[qt, qb],
        )

    def encode_paths(self) -> list[LevelPath]:
        """Code frames -> the input samples they depend on, per level (top first), as encode_padded computes."""

        def top(iv: Interval) -> Interval:
            return input_interval(self.enc_b, input_interval(self.enc_t, iv))

        def bottom(iv: Interval) -> Interval:
            # codes_b = quant(proj_b([h_b, dec_t(quant(enc_t(h_b)))])), proj_b is 1x1
            t_lo, t_hi = input_interval(self.dec_t, iv)
            h_lo, h_hi = input_interval(self.enc_t, (t_lo, t_hi))
            return input_interval(self.enc_b, (min(iv[0], h_lo), max(iv[1], h_hi)))

        return [LevelPath(self.downsample[0], top), LevelPath(self.downsample[1], bottom)]

    def decode_paths(self) -> list[LevelPath]:
        """Output samples -> each level's code frames: decoder([up_t(q_t), q_b]) at bottom resolution."""
        return [
            LevelPath(self.downsample[0], lambda iv: input_interval(self.up_t, input_interval(self.decoder, iv))),
            LevelPath(self.downsample[1], lambda iv: input_interval(self.decoder, iv)),
        ]
