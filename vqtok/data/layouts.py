"""Multi-codebook layouts: (Q, T) residual codes as the sequences a downstream model reads, and back.

Three layouts of codes (Q, T) (Q codebooks of K codes, T frames), each an exact round trip:

* ``flat``: one sequence of Q * T ids, frame after frame, codebook q of frame t at position t * Q + q with id
  q * K + code: one vocabulary of Q * K ids where each id says its codebook (a plain decoder-only LM over it).
* ``delay``: MusicGen's delay pattern (Copet et al. 2023, section 2.2): (Q, T + Q - 1), row q shifted right
  by q steps and padded with `pad`, so step s predicts codebook q of frame s - q: Q parallel heads, T + Q - 1 steps.
* ``stack``: (T, Q), the frame's codes side by side: a per-frame sum of Q embeddings in, Q heads out.
"""

from __future__ import annotations

import torch
from torch import Tensor

LAYOUTS = ("flat", "delay", "stack")


def _check(codes: Tensor) -> None:
    if codes.dim() != 2:
        raise ValueError(f"multi-codebook codes are (Q, T), got shape {tuple(codes.shape)}")


def flatten(codes: Tensor, codebook_size: int) -> Tensor:
    """(Q, T) -> (Q * T,): frame-major, id q * K + code."""
    _check(codes)
    offsets = torch.arange(codes.shape[0], device=codes.device)[:, None] * codebook_size
    return (codes + offsets).t().reshape(-1)


def unflatten(seq: Tensor, codebooks: int, codebook_size: int) -> Tensor:
    """(Q * T,) flat ids -> (Q, T) codes; an id in another codebook's range than its position's is an error."""
    if seq.dim() != 1 or len(seq) % codebooks:
        raise ValueError(f"a flat sequence of {codebooks} codebooks has a multiple of {codebooks} ids, got "
                         f"shape {tuple(seq.shape)}")
    frames = seq.reshape(-1, codebooks).t()  # (Q, T) of ids
    book = frames // codebook_size
    expected = torch.arange(codebooks, device=seq.device)[:, None]
    if not torch.equal(book, expected.expand_as(book)):
        raise ValueError("flat ids out of their position's codebook range (q * K .. q * K + K - 1)")
    return frames - expected * codebook_size


def delay(codes: Tensor, pad: int) -> Tensor:
    """(Q, T) -> (Q, T + Q - 1): row q starts q steps late; `pad` before and after."""
    _check(codes)
    q, t = codes.shape
    out = torch.full((q, t + q - 1), pad, dtype=codes.dtype, device=codes.device)
    for i in range(q):
        out[i, i : i + t] = codes[i]
    return out


def undelay(delayed: Tensor) -> Tensor:
    """(Q, T + Q - 1) -> (Q, T), the inverse of `delay`."""
    _check(delayed)
    q = delayed.shape[0]
    t = delayed.shape[1] - q + 1
    if t < 0:
        raise ValueError(f"a delayed map of {q} codebooks has at least {q - 1} steps, got {delayed.shape[1]}")
    return torch.stack([delayed[i, i : i + t] for i in range(q)])


def stack(codes: Tensor) -> Tensor:
    """(Q, T) -> (T, Q): each frame's codes side by side."""
    _check(codes)
    return codes.t().contiguous()


def apply(codes: Tensor, layout: str, codebook_size: int, pad: int) -> Tensor:
    """`layout` of (Q, T) codes (see the module doc)."""
    if layout == "flat":
        return flatten(codes, codebook_size)
    if layout == "delay":
        return delay(codes, pad)
    if layout == "stack":
        return stack(codes)
    raise ValueError(f"unknown layout '{layout}'; choose one of {', '.join(LAYOUTS)}")
