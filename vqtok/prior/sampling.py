"""Sampling from the priors (raster PixelCNN, KV-cached Transformer), logit filtering and NLL helpers."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from vqtok.prior.guidance import mix, with_null
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


def check_guidance(model: nn.Module, guidance: float) -> bool:
    """True when `guidance` needs the unconditional branch (w != 1); refuses a model without a null class."""
    if guidance == 1.0:
        return False
    if guidance < 0:
        raise ValueError(f"guidance must be >= 0, got {guidance}")
    if not model.config.null_class:
        raise ValueError(
            f"guidance {guidance} needs a prior trained with a null class (model.cond_dropout > 0 in its recipe); "
            "this one has none: sample with guidance 1"
        )
    return True


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
    guidance: float = 1.0,
) -> Tensor:
    """Sample n code maps (n, H, W) int64 in raster order.

    labels: (n,), (1,) or an int; cond: upper-level codes (n, h, w) or (1, h, w).
    The vertical stack is run once per row (on the rows so far) and only the horizontal stack once per code:
    the result equals a loop over full forward passes, at a fraction of the cost.
    guidance w != 1 (classifier-free guidance, `vqtok.prior.guidance.mix`) runs every batch twice in one: the
    conditional rows and the same maps under the null class, both fed the codes drawn from the mixed logits.
    """
    height, width = shape
    device = model.embedding.weight.device
    labels = _per_sample(labels, n, "labels", device)
    cond = _per_sample(cond, n, "cond", device)
    model.check_conditioning(labels, cond)
    guided = check_guidance(model, guidance)
    out = torch.zeros(n, height, width, dtype=torch.long, device=device)
    with _sampling_mode(model):
        for part in _batches(n, batch_size):
            codes = out[part]  # (b, H, W) view, filled in place
            lab = None if labels is None else labels[part]
            top = None if cond is None else cond[part]
            if guided:  # (2b, ...): conditional rows, then the null class
                lab, top = with_null(lab, model.config.num_classes), None if top is None else torch.cat([top, top])
            work = torch.cat([codes, codes]) if guided else codes  # what the network reads (2b | b, H, W)
            features = None if top is None else model.encode_cond(top, shape)  # (rows, Cc, H, W)
            biases = model.gate_biases(lab, features)  # per layer (rows, 2C, H|1, W|1)
            for i in range(height):
                above = slice(0, i + 1)
                # row i of the vertical context depends on rows < i only (already sampled)
                above_biases = [_crop(b, above, slice(None)) for b in biases]
                context = model.vertical_stack(model.embed(work[:, above]), above_biases)
                row = slice(i, i + 1)
                context = [c[:, :, row] for c in context]  # (rows, 2C, 1, W)
                for j in range(width):
                    left = slice(0, j + 1)
                    logits = model.horizontal_stack(
                        model.embed(work[:, row, left]),
                        [c[..., left] for c in context],
                        [_crop(b, row, left) for b in biases],
                    )[:, :, 0, j]  # (rows, K)
                    if guided:
                        logits = mix(logits, guidance)  # (b, K)
                    token = draw(filter_logits(logits, temperature, top_k, top_p), generator)  # (b,)
                    codes[:, i, j] = token
                    if guided:
                        work[:, i, j] = torch.cat([token, token])
    return out


@dataclass
class Decoded:
    """What `decode_transformer` drew: codes (n, length) int64, zero past each end, and lengths (n,)."""

    codes: Tensor
    lengths: Tensor


def decode_transformer(
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
    guidance: float = 1.0,
    stop: int | None = None,
    banned: Sequence[int] = (),
    cond_lengths: Tensor | None = None,
) -> Decoded:
    """The Transformer's one decode loop: n sequences of at most `length` codes, left to right.

    labels: (n,), (1,) or an int; cond: top codes (n, T_top) or (1, T_top), with cond_lengths (n,) when the
    items have different lengths (see `CausalTransformer.new_cache`). stop: a token that ends a sequence
    (EOS; never drawn first, so every sequence has a code); the lengths count the codes before it, and a
    sequence that never draws it has `length`. banned: ids never drawn (PAD, BOS). guidance w != 1 runs the
    conditional rows and null-class rows as one batch of 2b through the cache and draws from their mix.
    use_cache=False recomputes the whole prefix at every step (the reference path); both paths consume the
    RNG identically.
    """
    device = model.tok_emb.weight.device
    labels = _per_sample(labels, n, "labels", device)
    cond = _per_sample(cond, n, "cond", device)
    guided = check_guidance(model, guidance)
    out = torch.zeros(n, length, dtype=torch.long, device=device)
    lengths = torch.full((n,), length, dtype=torch.long, device=device)
    with _sampling_mode(model):
        for part in _batches(n, batch_size):
            codes = out[part]  # (b, length) view, filled in place
            b = codes.shape[0]
            lab = None if labels is None else labels[part]
            top = None if cond is None else cond[part]
            top_lengths = None if cond_lengths is None else cond_lengths[part]
            if guided:  # (2b, ...): the conditional rows, then the same prefixes under the null class
                lab = with_null(lab, model.config.num_classes)
                top = None if top is None else torch.cat([top, top])
                top_lengths = None if top_lengths is None else torch.cat([top_lengths, top_lengths])
            rows = 2 * b if guided else b
            cache = model.new_cache(rows, length, lab, top, top_lengths) if use_cache else None
            if cache is None:
                model.check_conditioning(lab, top, length)
            done = torch.zeros(b, dtype=torch.bool, device=device)
            for t in range(length):
                if cache is not None:
                    previous = None if t == 0 else codes[:, t - 1]
                    if guided and previous is not None:
                        previous = torch.cat([previous, previous])
                    logits = model.step(previous, cache)  # (rows, K)
                else:
                    prefix = torch.cat([codes[:, :t], codes[:, :t]]) if guided else codes[:, :t]
                    logits = model.next_logits(prefix, lab, top)
                logits = mix(logits, guidance) if guided else logits.float()  # (b, K)
                if banned:
                    logits[:, list(banned)] = -math.inf
                if stop is not None and t == 0:
                    logits[:, stop] = -math.inf  # at least one code
                token = draw(filter_logits(logits, temperature, top_k, top_p), generator)  # (b,)
                if stop is not None:
                    ended = (token == stop) & ~done
                    lengths[part][ended] = t
                    done |= ended
                    token = torch.where(done, torch.zeros_like(token), token)
                codes[:, t] = token
                if stop is not None and bool(done.all()):
                    break
    return Decoded(out, lengths)


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
    guidance: float = 1.0,
) -> Tensor:
    """Sample n code sequences (n, length) int64, left to right (`decode_transformer` without a stop token).

    labels: (n,), (1,) or an int; cond: top codes (n, T_top) or (1, T_top). For 2D maps sample H * W codes
    and rearrange "b (h w) -> b h w".
    """
    return decode_transformer(model, n, length, labels, cond, temperature, top_k, top_p, generator, use_cache,
                              batch_size, guidance).codes
