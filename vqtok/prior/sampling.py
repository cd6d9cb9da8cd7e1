"""Sampling from the priors (raster PixelCNN, KV-cached Transformer), logit filtering and NLL helpers.

The incremental paths and samplers take a network by the methods they call (a `GatedPixelCNN`'s stacks, a
`CausalTransformer`'s cache) and import neither: the networks import them, each for its own way through a code map
(`map_steps`, `sample_map`).
"""

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
    A generator on another device than the logits (the CPU generator of `vqtok sample --seed` with a
    prior on CUDA) draws on its own device: a seed then gives the same draws from the same probabilities.
    """
    probs = logits.float().softmax(dim=-1).reshape(-1, logits.shape[-1])  # (N, K)
    where = logits.device if generator is None else generator.device
    codes = torch.multinomial(probs.to(where), 1, generator=generator)  # (N, 1)
    return codes.to(logits.device).reshape(logits.shape[:-1])


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


class PixelCNNSteps:
    """The row-wise incremental path of a GatedPixelCNN over b maps (H, W), one code at a time in raster order.

    Call `next_logits` once per position, then `push` the codes chosen there. The vertical stack is run once
    per row (on the rows so far), the horizontal stack once per code: the logits equal those of a full forward
    pass at a fraction of the cost. The sampler draws the codes; the entropy coder (`vqtok.prior.coding`)
    pushes the known ones, so both compute every step's logits the same way.
    labels (b,) and cond (b, h, w) as the model takes them; guidance w != 1 runs each map twice in one batch
    (the labels, then the null class) and returns the mixed logits (`vqtok.prior.guidance.mix`).
    """

    def __init__(self, model: nn.Module, batch: int, shape: tuple[int, int], labels: Tensor | None = None,
                 cond: Tensor | None = None, guidance: float = 1.0):
        model.check_conditioning(labels, cond)
        self.model, self.shape, self.guidance = model, shape, guidance
        self.guided = check_guidance(model, guidance)
        if self.guided:  # (2b, ...): conditional rows, then the null class
            labels = with_null(labels, model.config.num_classes)
            cond = None if cond is None else torch.cat([cond, cond])
        rows = 2 * batch if self.guided else batch
        self.codes = torch.zeros(rows, *shape, dtype=torch.long, device=model.embedding.weight.device)
        features = None if cond is None else model.encode_cond(cond, shape)  # (rows, Cc, H, W)
        self.biases = model.gate_biases(labels, features)  # per layer (rows, 2C, H|1, W|1)
        self.context: list[Tensor] = []
        self.pos = 0

    def next_logits(self) -> Tensor:
        """Logits (b, K) of the code at the current position, float32."""
        model, (i, j) = self.model, divmod(self.pos, self.shape[1])
        row = slice(i, i + 1)
        if j == 0:  # row i of the vertical context depends on rows < i only (all known by now)
            above = slice(0, i + 1)
            above_biases = [_crop(b, above, slice(None)) for b in self.biases]
            context = model.vertical_stack(model.embed(self.codes[:, above]), above_biases)
            self.context = [c[:, :, row] for c in context]  # (rows, 2C, 1, W)
        left = slice(0, j + 1)
        logits = model.horizontal_stack(
            model.embed(self.codes[:, row, left]),
            [c[..., left] for c in self.context],
            [_crop(b, row, left) for b in self.biases],
        )[:, :, 0, j]  # (rows, K)
        return mix(logits, self.guidance) if self.guided else logits.float()

    def push(self, token: Tensor) -> None:
        """The codes (b,) at the current position; moves to the next one."""
        i, j = divmod(self.pos, self.shape[1])
        self.codes[:, i, j] = torch.cat([token, token]) if self.guided else token
        self.pos += 1


def sample_pixelcnn(
    model: nn.Module,
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
    """Sample n code maps (n, H, W) int64 in raster order through `PixelCNNSteps`.

    labels: (n,), (1,) or an int; cond: upper-level codes (n, h, w) or (1, h, w). guidance w != 1: classifier-free
    guidance, the conditional and null-class rows of each batch run as one batch of 2b.
    """
    height, width = shape
    device = model.embedding.weight.device
    labels = _per_sample(labels, n, "labels", device)
    cond = _per_sample(cond, n, "cond", device)
    model.check_conditioning(labels, cond)
    check_guidance(model, guidance)
    out = torch.zeros(n, height, width, dtype=torch.long, device=device)
    with _sampling_mode(model):
        for part in _batches(n, batch_size):
            codes = out[part]  # (b, H, W) view, filled in place
            steps = PixelCNNSteps(model, codes.shape[0], shape, None if labels is None else labels[part],
                                  None if cond is None else cond[part], guidance)
            for i in range(height):
                for j in range(width):
                    token = draw(filter_logits(steps.next_logits(), temperature, top_k, top_p), generator)  # (b,)
                    codes[:, i, j] = token
                    steps.push(token)
    return out


class TransformerSteps:
    """The incremental path of a CausalTransformer over b sequences of at most `length` codes.

    Call `next_logits` once per position, then `push` the codes chosen there (see `PixelCNNSteps`). With the KV
    cache each step feeds one position; use_cache=False recomputes the whole prefix (the reference path).
    labels (b,), cond (b, T_top) and cond_lengths (b,) (items of different lengths, cache only) as
    `CausalTransformer.new_cache` takes them; guidance w != 1 runs the conditional and null-class rows as one
    batch of 2b through the cache and returns the mixed logits.
    """

    def __init__(self, model: nn.Module, batch: int, length: int, labels: Tensor | None = None,
                 cond: Tensor | None = None, guidance: float = 1.0, use_cache: bool = True,
                 cond_lengths: Tensor | None = None, context: int | None = None):
        self.model, self.guidance = model, guidance
        # `context`: more codes than max_len are read in windows (SequenceLayout.windows); when one is full, the
        # next starts from the start token and the last `context` codes (one causal pass fills its cache)
        self.window = min(length, model.config.max_len) if context is not None else length
        self.context, self.start = context, 0  # start: the current window's first code
        if context is not None and cond is not None:
            raise ValueError("windows read a sequence without an upper level (cond=None)")
        self.guided = check_guidance(model, guidance)
        if self.guided:  # (2b, ...): the conditional rows, then the same prefixes under the null class
            labels = with_null(labels, model.config.num_classes)
            cond = None if cond is None else torch.cat([cond, cond])
            cond_lengths = None if cond_lengths is None else torch.cat([cond_lengths, cond_lengths])
        rows = 2 * batch if self.guided else batch
        self.labels, self.cond = labels, cond
        self.cache = model.new_cache(rows, self.window, labels, cond, cond_lengths) if use_cache else None
        if self.cache is None:
            if cond_lengths is not None:
                raise ValueError("cond_lengths needs the KV cache (use_cache=True)")
            model.check_conditioning(labels, cond, self.window)
        self.rows = rows
        self.codes = torch.zeros(rows, length, dtype=torch.long, device=model.tok_emb.weight.device)
        self.pos = 0

    def next_logits(self) -> Tensor:
        """Logits (b, K) of the code at the current position, float32."""
        t = self.pos
        if t - self.start == self.window:  # the window is full: the next one keeps `context` codes of it
            self.start = t - self.context
        if self.cache is None:
            logits = self.model.next_logits(self.codes[:, self.start : t], self.labels, self.cond)
        elif self.start > 0 and self.cache.pos == self.window:
            self.cache = self.model.new_cache(self.rows, self.window, self.labels)
            logits = self.model.prefill(self.codes[:, self.start : t], self.cache)
        else:
            logits = self.model.step(self.codes[:, t - 1] if t > 0 else None, self.cache)  # (rows, K)
        return mix(logits, self.guidance) if self.guided else logits.float()

    def push(self, token: Tensor) -> None:
        """The codes (b,) at the current position; moves to the next one."""
        self.codes[:, self.pos] = torch.cat([token, token]) if self.guided else token
        self.pos += 1


@dataclass
class Decoded:
    """What `decode_transformer` drew: codes (n, length) int64, zero past each end, and lengths (n,)."""

    codes: Tensor
    lengths: Tensor


def decode_transformer(
    model: nn.Module,
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
    context: int | None = None,
) -> Decoded:
    """The Transformer's one decode loop: n sequences of at most `length` codes, left to right.

    labels: (n,), (1,) or an int; cond: top codes (n, T_top) or (1, T_top), with cond_lengths (n,) when the
    items have different lengths (see `CausalTransformer.new_cache`). stop: a token that ends a sequence
    (EOS; never drawn first, so every sequence has a code); the lengths count the codes before it, and a
    sequence that never draws it has `length`. banned: ids never drawn (PAD, BOS). guidance w != 1 runs the
    conditional rows and null-class rows as one batch of 2b through the cache and draws from their mix.
    use_cache=False recomputes the whole prefix at every step (the reference path); both paths consume the
    RNG identically. context: sequences longer than max_len are drawn in windows (see `TransformerSteps`).
    """
    device = model.tok_emb.weight.device
    labels = _per_sample(labels, n, "labels", device)
    cond = _per_sample(cond, n, "cond", device)
    check_guidance(model, guidance)
    out = torch.zeros(n, length, dtype=torch.long, device=device)
    lengths = torch.full((n,), length, dtype=torch.long, device=device)
    with _sampling_mode(model):
        for part in _batches(n, batch_size):
            codes = out[part]  # (b, length) view, filled in place
            b = codes.shape[0]
            steps = TransformerSteps(model, b, length, None if labels is None else labels[part],
                                     None if cond is None else cond[part], guidance, use_cache,
                                     None if cond_lengths is None else cond_lengths[part], context)
            done = torch.zeros(b, dtype=torch.bool, device=device)
            for t in range(length):
                logits = steps.next_logits()  # (b, K)
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
                steps.push(token)
                if stop is not None and bool(done.all()):
                    break
    return Decoded(out, lengths)


def sample_transformer(model: nn.Module, n: int, length: int, labels: Tensor | int | None = None,
                       cond: Tensor | None = None, **options) -> Tensor:
    """Sample n code sequences (n, length) int64, left to right: `decode_transformer` without a stop token.

    labels: (n,), (1,) or an int; cond: top codes (n, T_top) or (1, T_top). options: temperature, top_k, top_p,
    generator, use_cache, batch_size, guidance (see `decode_transformer`). For 2D maps sample H * W codes and
    rearrange "b (h w) -> b h w".
    """
    return decode_transformer(model, n, length, labels, cond, **options).codes
