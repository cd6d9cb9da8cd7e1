"""The token vocabulary a prior models over one level's codes: the codes, then PAD, BOS and EOS."""

from __future__ import annotations

from dataclasses import dataclass

RESERVED = ("pad", "bos", "eos")


@dataclass(frozen=True)
class Vocab:
    """Token ids of one level: codes 0..K-1, then PAD, BOS, EOS."""

    codebook_size: int

    @property
    def pad(self) -> int:
        return self.codebook_size

    @property
    def bos(self) -> int:
        return self.codebook_size + 1

    @property
    def eos(self) -> int:
        return self.codebook_size + 2

    @property
    def size(self) -> int:
        return self.codebook_size + len(RESERVED)
