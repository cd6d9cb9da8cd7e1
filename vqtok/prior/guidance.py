"""Classifier-free guidance (Ho & Salimans 2022): the null class, label dropping in training, logit mixing."""

from __future__ import annotations

import torch
from torch import Tensor


def drop_labels(labels: Tensor, p: float, null: int) -> Tensor:
    """Each label (B,) replaced by the null class `null` with probability p (Ho & Salimans 2022, Alg. 1).

    Draws from the global torch RNG, which the trainer saves and restores, so resuming stays exact.
    """
    if p <= 0:
        return labels
    dropped = torch.rand(labels.shape, device=labels.device) < p  # (B,)
    return torch.where(dropped, torch.full_like(labels, null), labels)


def with_null(labels: Tensor, null: int) -> Tensor:
    """Labels (B,) -> (2B,): the conditional rows first, then as many rows of the null class."""
    return torch.cat([labels, torch.full_like(labels, null)])


def mix(logits: Tensor, guidance: float) -> Tensor:
    """Logits (2B, K) of `with_null` rows -> guided logits (B, K): l_u + w (l_c - l_u) (Ho & Salimans 2022, eq. 6,
    on log-probabilities as autoregressive models use it, e.g. Parti). w = 1 is the conditional model itself,
    w = 0 the unconditional one."""
    cond, uncond = logits.float().chunk(2)
    return uncond + guidance * (cond - uncond)
