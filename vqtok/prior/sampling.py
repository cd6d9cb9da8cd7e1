"""Sampling from the priors (raster PixelCNN, KV-cached Transformer), logit filtering and NLL helpers."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from vqtok.prior.pixelcnn import GatedPixelCNN
from vqtok.prior.transformer import CausalTransformer


def filter_logits(
    logits: Tensor, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None
) -> Tensor:
    """Scale and truncate logits (..., K); removed entries become -inf.

    temperature 0 keeps only the argmax (greedy). top_k keeps the k largest; top_p keeps the smallest set of
    most likely codes whose probability reaches p (nucleus sampling, Holtzman et al. 2020, eq. 2).
    """
    logits = logits.float()
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    if temperature == 0:
        best = logits.argmax(dim=-1, keepdim=True)
        return torch.full_like(logits, -math.inf).scatter(-1, best, 0.0)
    logits = logits / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]  # (..., 1)
        logits = logits.masked_fill(logits < kth, -math.inf)
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        mass_before = probs.cumsum(dim=-1) - probs  # probability of the strictly more likely codes
        drop = mass_before >= top_p  # the most likely code always stays (mass_before = 0)
        logits = logits.masked_fill(drop.scatter(-1, order, drop), -math.inf)
    return logits


def draw(logits: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """One code per row from (filtered) logits (..., K) -> (...,) int64, via torch.multinomial.

    Both Transformer paths and the PixelCNN sampler go through here, so they consume the RNG identically.
    """
    probs = logits.softmax(dim=-1).reshape(-1, logits.shape[-1])  # (N, K)
    return torch.multinomial(probs, 1, generator=generator).reshape(logits.shape[:-1])


def _code_axis(logits: Tensor, targets: Tensor, class_dim: int | None) -> int:
    """The axis of logits holding the K codes; by default the layouts of the two priors:
    1 for GatedPixelCNN's (B, K, H, W) and -1 for CausalTransformer's (B, T, K)."""
    if class_dim is None:
        class_dim = 1 if logits.dim() == 4 else -1
    dim = class_dim % logits.dim()
    if logits.shape[:dim] + logits.shape[dim + 1 :] != targets.shape:
        raise ValueError(
            f"logits {tuple(logits.shape)} with codes on axis {dim} do not match "
            f"targets {tuple(targets.shape)}; "
            "expected logits (B, K, H, W) for targets (B, H, W) or (B, T, K) for (B, T), or pass class_dim"
        )
    return dim


def nll_nats(logits: Tensor, targets: Tensor, class_dim: int | None = None) -> Tensor:
    """Mean negative log-likelihood in nats per code (differentiable; use it as the training loss).

    logits (B, K, H, W) with targets (B, H, W), or logits (B, T, K) with targets (B, T); pass class_dim for
    any other layout.
    """
    dim = _code_axis(logits, targets, class_dim)
    return F.cross_entropy(logits.movedim(dim, 1).float(), targets)


def nll_bits(logits: Tensor, targets: Tensor, class_dim: int | None = None) -> Tensor:
    """Mean negative log-likelihood in bits per code: nll_nats / ln 2."""
    return nll_nats(logits, targets, class_dim) / math.log(2.0)


@contextmanager
def _sampling_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode (no dropout) and no autograd while sampling; the model's mode is restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def _per_sample(x: Tensor | int | None, n: int, name: str, device: torch.device) -> Tensor | None:
    """labels / cond with a leading batch axis of n (a scalar label or a batch of 1 is repeated)."""
    if x is None:
        return None
    x = torch.as_tensor(x, dtype=torch.long, device=device)
    if x.dim() == 0:
        x = x.expand(n)
    if x.shape[0] == 1 and n > 1:
        x = x.expand(n, *x.shape[1:])
    if x.shape[0] != n:
        raise ValueError(f"{name} has batch size {x.shape[0]}; expected 1 or n={n}")
    return x


def _batches(n: int, batch_size: int | None) -> Iterator[slice]:
    step = n if batch_size is None else batch_size
    if step < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    for start in range(0, n, step):
        yield slice(start, min(start + step, n))


def _crop(bias: Tensor | None, rows: slice, cols: slice) -> Tensor | None:
    """A gate bias (B, 2C, H|1, W|1) restricted to rows / cols (size-1 axes broadcast, kept as they are)."""
    if bias is None:
        return None
    rows = rows if bias.shape[2] > 1 else slice(None)  # a class bias (B, 2C, 1, 1) broadcasts everywhere
    cols = cols if bias.shape[3] > 1 else slice(None)
    return bias[:, :, rows, cols]


def sample_pixelcnn(
    model: GatedPixelCNN,
    n: int,
    shape: tuple[int, int],
    labels: Tensor | int | None = None,
    cond: Tensor | None = None,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
    batch_size: int | None = None,
) -> Tensor:
    """Sample n code maps (n, H, W) int64 in raster order.

    labels: (n,), (1,) or an int; cond: upper-level codes (n, h, w) or (1, h, w).
    The vertical stack is run once per row (on the rows so far) and only the horizontal stack once per code:
    the result equals a loop over full forward passes, at a fraction of the cost.
    """
    height, width = shape
    device = model.embedding.weight.device
    labels = _per_sample(labels, n, "labels", device)
    cond = _per_sample(cond, n, "cond", device)
    model.check_conditioning(labels, cond)
    out = torch.zeros(n, height, width, dtype=torch.long, device=device)
    with _sampling_mode(model):
        for part in _batches(n, batch_size):
            codes = out[part]  # (b, H, W) view, filled in place
            lab = None if labels is None else labels[part]
            features = None if cond is None else model.encode_cond(cond[part], shape)  # (b, Cc, H, W)
            biases = model.gate_biases(lab, features)  # per layer (b, 2C, H|1, W|1)
            for i in range(height):
                above = slice(0, i + 1)
                # row i of the vertical context depends on rows < i only (already sampled)
                above_biases = [_crop(b, above, slice(None)) for b in biases]
                context = model.vertical_stack(model.embed(codes[:, above]), above_biases)
                row = slice(i, i + 1)
                context = [c[:, :, row] for c in context]  # (b, 2C, 1, W)
                for j in range(width):
                    left = slice(0, j + 1)
                    logits = model.horizontal_stack(
                        model.embed(codes[:, row, left]),
                        [c[..., left] for c in context],
                        [_crop(b, row, left) for b in biases],
                    )[:, :, 0, j]  # (b, K)
                    codes[:, i, j] = draw(filter_logits(logits, temperature, top_k, top_p), generator)
    return out


def sample_transformer(
    model: CausalTransformer,
    n: int,
    length: int,
    labels: Tensor | int | None = None,
    cond: Tensor | None = None,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
    batch_size: int | None = None,
) -> Tensor:
    """Sample n code sequences (n, length) int64, left to right.

    labels: (n,), (1,) or an int; cond: top codes (n, T_top) or (1, T_top). For 2D maps sample H * W codes
    and rearrange "b (h w) -> b h w". use_cache=False recomputes the whole prefix at every step (the
    reference path); both paths draw from the RNG identically.
    """
    device = model.tok_emb.weight.device
    labels = _per_sample(labels, n, "labels", device)
    cond = _per_sample(cond, n, "cond", device)
    out = torch.zeros(n, length, dtype=torch.long, device=device)
    with _sampling_mode(model):
        for part in _batches(n, batch_size):
            codes = out[part]  # (b, length) view, filled in place
            lab = None if labels is None else labels[part]
            top = None if cond is None else cond[part]
            cache = model.new_cache(codes.shape[0], length, lab, top) if use_cache else None
            for t in range(length):
                if cache is not None:
                    logits = model.step(codes[:, t - 1] if t > 0 else None, cache)
                else:
                    logits = model.next_logits(codes[:, :t], lab, top)
                codes[:, t] = draw(filter_logits(logits, temperature, top_k, top_p), generator)
    return out
