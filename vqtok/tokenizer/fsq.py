"""FSQ: finite scalar quantization (Mentzer et al. 2023): each dim bounded and rounded to a few levels, no codebook."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from vqtok.tokenizer.quantizer import QuantizerOutput


class FSQ(nn.Module):
    """Dims bounded to L_i levels and rounded; the code is the mixed-radix number of the rounded dims.

    With levels (8, 5, 5, 5) there are 1,000 codes: nothing to learn, nothing to search, no commitment loss and no
    dead codes. Inputs are (N, D) or channel-first (B, D, ...) with D = len(levels); `quantized` holds each dim's
    level scaled to [-1, 1], the gradient passing straight through the rounding (paper, section 3.1).
    """

    def __init__(self, levels: list[int], eps: float = 1e-3):
        super().__init__()
        if not levels or any(level < 2 for level in levels):
            raise ValueError(f"FSQ levels must each be at least 2, got {levels}")
        self.levels = list(levels)
        self.dim = len(levels)
        self.codebook_size = math.prod(levels)
        self.eps = eps
        levels_t = torch.tensor(levels)
        self.register_buffer("_levels", levels_t, persistent=False)
        basis = torch.cumprod(torch.tensor([1] + levels[:-1]), 0)  # mixed radix: first dim least significant
        self.register_buffer("_basis", basis, persistent=False)

    # ------------------------------------------------------------------ verbs
    def bound(self, z: Tensor) -> Tensor:
        """(..., D) -> each dim squashed into (-(L-1)/2, (L-1)/2), shifted by half a step for even L so that
        rounding gives exactly L integers (from -L/2 for even L, from -(L-1)/2 for odd L)."""
        half = (self._levels - 1) * (1 + self.eps) / 2
        offset = torch.where(self._levels % 2 == 0, 0.5, 0.0)
        shift = torch.atanh(offset / half)
        return torch.tanh(z + shift) * half - offset

    def encode(self, x: Tensor) -> Tensor:
        """(N, D) or (B, D, ...) -> codes (N,) or (B, ...) in [0, prod(levels))."""
        return self._to_index(torch.round(self.bound(self._last(x))))

    def decode(self, codes: Tensor) -> Tensor:
        """codes (N,) or (B, ...) -> (N, D) or (B, D, ...) in [-1, 1]."""
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self.codebook_size):
            raise ValueError(f"FSQ codes must lie in [0, {self.codebook_size}), got {int(codes.min())}.."
                             f"{int(codes.max())}")
        digits = (codes[..., None] // self._basis) % self._levels  # (..., D) in [0, L)
        values = self._scale(digits - self._levels // 2)
        return values if codes.dim() == 1 else values.movedim(-1, 1)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> QuantizerOutput:
        """mask (nonzero = valid) only restricts the usage statistics."""
        z = self._last(x)
        bounded = self.bound(z.float())
        rounded = bounded + (torch.round(bounded) - bounded).detach()  # straight-through rounding
        codes = self._to_index(rounded.detach())
        quantized = self._scale(rounded).to(x.dtype)
        if x.dim() > 2:
            quantized = quantized.movedim(-1, 1)
        valid = None if mask is None else _flat(mask, x)
        flat = codes.reshape(-1)
        counts = torch.bincount(flat if valid is None else flat[valid], minlength=self.codebook_size).float()
        probs = counts / counts.sum().clamp_min(1.0)
        zero = torch.zeros((), device=x.device)
        return QuantizerOutput(
            quantized=quantized,
            codes=codes,
            commit_loss=zero,
            perplexity=torch.exp(-(probs * torch.log(probs.clamp_min(1e-10))).sum()),
            usage=(counts > 0).float().mean(),
            revived=zero,
        )

    # --------------------------------------------------------------- internals
    def _last(self, x: Tensor) -> Tensor:
        if x.shape[1] != self.dim:
            raise ValueError(f"expected (N, {self.dim}) or (B, {self.dim}, ...) input, got {tuple(x.shape)}")
        return x if x.dim() == 2 else x.movedim(1, -1)

    def _scale(self, centred: Tensor) -> Tensor:
        """Integer levels centred on 0 -> [-1, 1]: divided by half the level count (L // 2)."""
        return centred / (self._levels // 2)

    def _to_index(self, rounded: Tensor) -> Tensor:
        digits = (rounded + self._levels // 2).long()  # (..., D) in [0, L)
        return (digits * self._basis).sum(-1)


def _flat(mask: Tensor, x: Tensor) -> Tensor:
    """A VectorQuantizer-style mask -> (N,) bool over x's positions."""
    if x.dim() == 2:
        return mask.reshape(-1).bool()
    if mask.dim() == x.dim():
        mask = mask[:, 0]
    return mask.expand(x.shape[0], *x.shape[2:]).reshape(-1).bool()
