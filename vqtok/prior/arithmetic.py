"""Range coding (arithmetic coding with byte renormalisation) over integer frequency tables, and the
deterministic logits -> table quantisation.

Our own coder rather than a library's: constriction's range coder (the maintained one) writes whole 32-bit
words, so a single ~180-bit MNIST map would pay about two bytes more for its end than a byte-granular coder."""

from __future__ import annotations

import numpy as np
from torch import Tensor

from vqtok.errors import VqtokError

PRECISION = 24  # every frequency table sums to 2**PRECISION
TOTAL = 1 << PRECISION
_STATE = 64  # bits of the coder's window onto the interval
_MASK = (1 << _STATE) - 1
_BOTTOM = 1 << (_STATE - 8)  # the width stays in [2**56, 2**64] between symbols


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


class RangeEncoder:
    """Arithmetic coding of a message of any length in time linear in its length.

    The interval is [low, low + width) in units of 2**-64 below the bytes already written. Each symbol s
    narrows it to r * [cum(s), cum(s) + freqs[s]) with r = width >> PRECISION, cum(s) = freqs[:s].sum();
    whenever the width falls under 2**56 the top byte of low is written and the window moves on a byte. The
    width keeps >= 2**56, so r >= 2**32 and the floor in r costs under 2**-32 of a bit per symbol. A carry out
    of low adds one to the bytes written. `finish` writes the shortest end whose value (zero-padded) lies in
    the final interval and drops trailing zero bytes: at most ~2 bytes beyond the information content
    -log2 prod(freqs[s] / TOTAL), ~2.6 bits on average.
    """

    def __init__(self) -> None:
        self.low, self.width = 0, 1 << _STATE
        self.out = bytearray()
        self.carries = 0  # how often a carry ran into the bytes written (the tests check this path runs)

    def encode(self, symbol: int, freqs: np.ndarray) -> None:
        r = self.width >> PRECISION
        self.low += r * int(freqs[:symbol].sum())
        self.width = r * int(freqs[symbol])
        if self.low > _MASK:
            self._carry()
        while self.width < _BOTTOM:
            self.out.append(self.low >> (_STATE - 8))
            self.low = (self.low << 8) & _MASK
            self.width <<= 8

    def _carry(self) -> None:
        """low passed 2**64: add one to the bytes written (the interval stays inside [0, 1), so it stops)."""
        self.low &= _MASK
        self.carries += 1
        i = len(self.out) - 1
        while self.out[i] == 0xFF:
            self.out[i] = 0
            i -= 1
        self.out[i] += 1

    def finish(self) -> bytes:
        """The message: the bytes written, then the fewest bytes k that reach into [low, low + width)."""
        for k in range(_STATE // 8 + 1):
            step = 1 << (_STATE - 8 * k)
            end = -(-self.low // step) * step  # the smallest multiple of step >= low
            if end < self.low + self.width:
                break
        if end > _MASK:
            self._carry()
        self.out += (end & _MASK).to_bytes(_STATE // 8, "big")[:k]
        return bytes(self.out).rstrip(b"\0")  # the decoder reads zeros past the end


class RangeDecoder:
    """Reads what `RangeEncoder` wrote, given the same frequency tables in the same order.

    It tracks value - low (the message's value inside the current interval), which needs no carries.
    """

    def __init__(self, payload: bytes) -> None:
        self.data, self.pos = payload, _STATE // 8
        self.value = int.from_bytes(payload[: self.pos].ljust(self.pos, b"\0"), "big")
        self.width = 1 << _STATE

    def decode(self, freqs: np.ndarray) -> int:
        r = self.width >> PRECISION
        q = self.value // r
        if q >= TOTAL:  # only a corrupted payload, or other tables, lands in the width's unused remainder
            raise VqtokError("the payload does not decode under these probabilities (corrupted, or another prior)")
        cum = np.cumsum(freqs)  # cum[s] = freqs[: s + 1].sum()
        symbol = int(np.searchsorted(cum, q, side="right"))
        freq = int(freqs[symbol])
        self.value -= r * (int(cum[symbol]) - freq)
        self.width = r * freq
        while self.width < _BOTTOM:
            byte = self.data[self.pos] if self.pos < len(self.data) else 0
            self.value = (self.value << 8) | byte
            self.width <<= 8
            self.pos += 1
        return symbol
