"""Exact arithmetic coding with integer frequency tables, and the deterministic logits -> table quantisation."""

from __future__ import annotations

import numpy as np
from torch import Tensor

from vqtok.errors import VqtokError

PRECISION = 24  # every frequency table sums to 2**PRECISION
TOTAL = 1 << PRECISION


def frequencies(logits: Tensor) -> np.ndarray:
    """fp32 logits (K,) -> int64 frequencies (K,), each >= 1, summing to 2**PRECISION.

    Deterministic: the softmax is taken in float64 from the exact fp32 values, floored to the table, every
    symbol gets one more count (so any code can be coded), and what the floor left goes to the most likely
    symbol. Encoder and decoder call this on bit-identical logits, so they see identical tables.
    """
    x = logits.detach().cpu().double().numpy()  # exact widening of fp32
    p = np.exp(x - x.max())
    p /= p.sum()
    freqs = np.floor(p * (TOTAL - len(p))).astype(np.int64) + 1
    freqs[int(np.argmax(freqs))] += TOTAL - int(freqs.sum())
    return freqs


class ArithmeticEncoder:
    """Arithmetic coding in exact integer arithmetic (Python ints, no renormalisation, no carry).

    After n symbols the interval is [low, low + width) / 2**(PRECISION * n): each symbol s narrows it to its
    share freqs[s] / TOTAL, starting at cum(s) = freqs[:s].sum(). `finish` writes the shortest byte string
    whose value (as a binary fraction, zero-padded) lies in the interval: at most ~9 bits more than the
    information content -log2 prod(freqs[s] / TOTAL). Work per symbol is linear in the message length so far.
    """

    def __init__(self) -> None:
        self.low, self.width, self.count = 0, 1, 0

    def encode(self, symbol: int, freqs: np.ndarray) -> None:
        cum = int(freqs[:symbol].sum())
        self.low = (self.low << PRECISION) + cum * self.width
        self.width *= int(freqs[symbol])
        self.count += 1

    def finish(self) -> bytes:
        scale = PRECISION * self.count  # the interval's denominator is 2**scale
        nbytes = max(0, (scale - self.width.bit_length()) // 8 - 1)  # just under the information content
        while True:
            bits = 8 * nbytes
            # smallest value m / 2**bits >= low / 2**scale; it must stay below (low + width) / 2**scale
            m = self.low << (bits - scale) if bits >= scale else -((-self.low) >> (scale - bits))
            if (m << scale) < (self.low + self.width) << bits:
                return m.to_bytes(nbytes, "big")
            nbytes += 1


class ArithmeticDecoder:
    """Reads what `ArithmeticEncoder` wrote, given the same frequency tables in the same order."""

    def __init__(self, payload: bytes) -> None:
        self.value, self.bits = int.from_bytes(payload, "big"), 8 * len(payload)
        self.low, self.width, self.count = 0, 1, 0

    def decode(self, freqs: np.ndarray) -> int:
        scale = PRECISION * (self.count + 1)
        # (value - low') in units of the new width, with low' = low * TOTAL: which symbol's share holds it
        offset = (self.value << scale) - ((self.low << PRECISION) << self.bits)
        q = offset // (self.width << self.bits)
        if not 0 <= q < TOTAL:
            raise VqtokError("the payload does not decode under these probabilities (corrupted, or another prior)")
        cum = np.cumsum(freqs)  # cum[s] = freqs[: s + 1].sum()
        symbol = int(np.searchsorted(cum, q, side="right"))
        self.low = (self.low << PRECISION) + int(cum[symbol] - freqs[symbol]) * self.width
        self.width *= int(freqs[symbol])
        self.count += 1
        return symbol
