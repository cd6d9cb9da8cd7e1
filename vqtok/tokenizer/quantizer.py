"""VectorQuantizer: EMA codebook, k-means init, dead-code revival, straight-through estimator."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

# Largest N x K distance block held at once (elements; 2**24 fp32 = 64 MiB).
DEFAULT_CHUNK_ELEMENTS = 2**24


@dataclass
class QuantizerConfig:
    """Quantizer hyper-parameters shared by every level (codebook size and dim are per level)."""

    decay: float = 0.99  # EMA decay of counts and sums (van den Oord et al. 2017, appendix A.1)
    # Decay warm-up as in TF's ExponentialMovingAverage(num_updates): step n uses
    # min(decay, (1 + n) / (decay_warmup + n)), so the codebook follows the fast-moving encoder of the
    # first steps and codes it leaves behind are found dead quickly. 0 disables it.
    decay_warmup: float = 10.0
    beta: float = 0.25  # commitment loss weight
    eps: float = 1e-5  # Laplace smoothing of the counts
    kmeans_iters: int = 10  # Lloyd iterations after k-means++ seeding on the first training batch
    dead_ratio: float = 0.1  # a code is dead when its EMA count < dead_ratio * (N / K) ...
    dead_floor: float = 0.01  # ... or below this absolute floor, whichever is larger
    seed: int = 0  # seeds the k-means init (identical on every rank)


@dataclass
class QuantizerOutput:
    """What one quantizer forward returns. Scalars are 0-dim tensors (no host sync)."""

    quantized: Tensor  # like the input; equals codebook[codes], gradient flows straight through to x
    codes: Tensor  # int64, the input shape without the channel axis
    commit_loss: Tensor  # beta * ||x - sg(e)||^2, averaged over valid vectors and dims
    perplexity: Tensor  # exp(entropy) of this batch's code histogram
    usage: Tensor  # fraction of the K codes used in this batch
    revived: Tensor  # number of dead codes replaced in this step (0 outside training)


def _dist_ready() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def first_min_index(dist: Tensor, group: int = 64, with_gap: bool = False) -> Tensor | tuple[Tensor, Tensor]:
    """dist.min(1).indices of an (N, K) block: each row's smallest entry, ties to the lowest index (argmin's rule).

    On the CPU, min-with-index over K is not vectorised (~2.5 ns an entry on one thread, as long as the distance
    GEMM itself for 1024 codes). So the K entries go in groups of `group`: a values-only minimum per group
    (vectorised), the first group holding the row's minimum, then the first minimum inside it; the same index
    as the plain reduction, ~4x faster. with_gap: also each row's runner-up minus its minimum ((N,), inf when
    K == 1), from the group minima and the winning group.
    """
    n, k = dist.shape
    if dist.device.type != "cpu" or k % group or k < 4 * group:
        index = dist.min(1).indices
        if not with_gap:
            return index
        if k == 1:
            return index, torch.full((n,), torch.inf, device=dist.device)
        two = dist.topk(2, dim=1, largest=False).values  # (N, 2)
        return index, two[:, 1] - two[:, 0]
    per_row = k // group
    rows = torch.arange(n, device=dist.device)
    group_min = dist.view(n, per_row, group).amin(2)  # (N, groups)
    g = group_min.min(1).indices  # (N,) the first group whose minimum is the row's
    winners = dist.reshape(-1, group).index_select(0, rows * per_row + g)  # (N, group)
    best, inside = winners.min(1)
    index = g * group + inside
    if not with_gap:
        return index
    winners[rows, inside] = torch.inf  # the runner-up: second in the winning group, or another group's minimum
    group_min[rows, g] = torch.inf
    return index, torch.minimum(winners.amin(1), group_min.amin(1)) - best


@dataclass(frozen=True)
class SearchTable:
    """A codebook as `nearest_codes` searches it, centred on its mean so a large common offset does not cancel."""

    center: Tensor  # (D,) the codebook mean
    e_t: Tensor  # (D + 1, K): [-2 e^T; ||e||^2] for the centred rows e
    e_sq_max: Tensor  # () the largest ||e||^2
    e_norm_max: Tensor  # () the largest ||e||


@torch.no_grad()
def search_table(codebook: Tensor) -> SearchTable:
    """Prepare (K, D) `codebook` for `nearest_codes`."""
    center = codebook.mean(0)
    e = codebook - center  # (K, D)
    e_sq = (e * e).sum(1)  # (K,)
    # [x - center, 1] @ [-2 e^T; ||e||^2] = ||e||^2 - 2 x.e in one GEMM: no separate pass adding ||e||^2 (on one
    # CPU thread this and min() over argmin() take ~1/5 off the search, the same codes on real speech)
    return SearchTable(center, torch.cat([e.t() * -2.0, e_sq[None]]), e_sq.max(), e_sq.max().sqrt())


def distance_slack(dim: int, device: torch.device) -> float:
    """Bound on the fp32 error of a difference of two `nearest_codes` distances, as a fraction of `scale`.

    Each distance is a (D + 1)-term dot product of rounded, centred values: off by at most about (D + 4) units of
    roundoff times the sum of its terms' magnitudes (Higham, Accuracy and Stability of Numerical Algorithms, 3.1),
    which `scale` bounds; a difference of two, twice that; 10% on top. TF32 matmuls (torch's
    `allow_tf32` on CUDA) round to 11 bits, not 24.
    """
    tf32 = device.type == "cuda" and torch.backends.cuda.matmul.allow_tf32
    return 2.2 * (dim + 4) * 2.0 ** (-11 if tf32 else -24)


def _refine(x: Tensor, codebook: Tensor, dist: Tensor, reach: Tensor, fragile_rtol: float | None
            ) -> tuple[Tensor, Tensor | None]:
    """Rows the fp32 search could not settle, decided in fp64 among the codes within `reach` of their fp32 best.

    x: (m, D), codebook: (K, D), dist: (m, K) their fp32 distances, reach: (m,). Returns the nearest codes (ties to
    the lowest index) and, with fragile_rtol, (m,) bool: whether x lies within fragile_rtol * |x| of its cell's
    boundary, min over k of (d_k - d_c) / (2 |e_k - e_c|), the distance to the bisecting hyperplane of e_c and e_k.
    Exact duplicates of e_c tie by construction, to the lowest index, and do not count. Each distance is a sum of
    squared differences of one (row, code) pair, the same however the rows were chunked.
    """
    r, k = (dist <= dist.amin(1, keepdim=True) + reach[:, None]).nonzero(as_tuple=True)  # candidate pairs
    d = (x[r].double() - codebook[k].double()).square().sum(1)  # (P,)
    table = torch.full(dist.shape, torch.inf, dtype=torch.float64, device=x.device)
    table[r, k] = d
    codes = table.argmin(1)
    if fragile_rtol is None:
        return codes, None
    c = codes[r]
    sep = (codebook[c].double() - codebook[k].double()).norm(dim=1)  # (P,) |e_c - e_k|
    boundary = torch.where(sep > 0, (d - table[r, c]) / (2 * sep), torch.inf)
    nearest = torch.full((len(x),), torch.inf, dtype=torch.float64, device=x.device)
    nearest = nearest.scatter_reduce(0, r, boundary, "amin")  # (m,) each row's nearest boundary
    return codes, nearest <= fragile_rtol * x.double().norm(dim=1)


@torch.no_grad()  # codes carry no gradient
def nearest_codes(x: Tensor, codebook: Tensor, chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
                  table: SearchTable | None = None, exact: bool = True,
                  fragile_rtol: float | None = None) -> Tensor | tuple[Tensor, Tensor]:
    """Index of the nearest codebook row for every row of x.

    x: (N, D), codebook: (K, D) -> (N,) int64. argmin ||x - e||^2 = argmin ||e||^2 - 2 x.e in one fp32 GEMM, both
    sides centred on the codebook mean first so a large common offset does not cancel. The N x K block never
    exceeds `chunk_elements`. `table`: `search_table(codebook)` made beforehand (a quantizer keeps its own).

    exact: rows whose runner-up is within the fp32 error bound (`distance_slack`) are decided again in fp64
    (`_refine`), so every code is the true nearest (ties to the lowest index) and does not depend on how
    the rows were chunked or batched (0.4% of rows on test speech for speech-16k); no host sync when False
    (training). With `fragile_rtol`, also returns (N,) bool: True where moving x by fragile_rtol * |x| could
    change its code (a latent that much off, e.g. from another batch's float rounding, may get another code).
    Rows whose fp32 margin alone rules that out are not recomputed; the rest are, in fp64.
    """
    t = search_table(codebook) if table is None else table
    n, k = x.shape[0], t.e_t.shape[1]
    rows = max(1, chunk_elements // k)
    out = torch.empty(n, dtype=torch.long, device=x.device)
    fragile = None if fragile_rtol is None else torch.zeros(n, dtype=torch.bool, device=x.device)
    slack = distance_slack(x.shape[1], x.device)
    xa = torch.ones(min(n, rows), x.shape[1] + 1, dtype=t.e_t.dtype, device=x.device)  # [x - center, 1], a chunk
    for start in range(0, n, rows):
        xs = x[start : start + rows]
        xa_c = xa[: len(xs)]
        xc = torch.sub(xs, t.center, out=xa_c[:, :-1])
        dist_block = xa_c @ t.e_t  # (rows, K)
        if not exact and fragile is None:
            out[start : start + rows] = first_min_index(dist_block)
            continue
        codes, gap = first_min_index(dist_block, with_gap=True)  # gap: runner-up minus best, (rows,)
        out[start : start + rows] = codes
        scale = 2 * xc.norm(dim=1) * t.e_norm_max + t.e_sq_max  # bounds the terms of any distance
        gap = gap - slack * scale  # a lower bound on the true gap to any other code
        check = gap <= 0  # fp32 cannot tell these apart
        # A boundary within rtol |x| of x means a distance gap of at most 2 rtol |x| |e_k - e_c| <= 4 rtol |x| max|e|.
        if fragile is not None:
            near = fragile_rtol * xs.norm(dim=1) * 4.0001 * t.e_norm_max
            check |= gap <= near
        redo = check.nonzero()[:, 0]
        if len(redo):
            # candidates: the true nearest lies within one slack of the fp32 best, a code with a boundary that near
            # within one more slack and `near`
            reach = 2 * slack * scale[redo]
            if fragile is not None:
                reach = reach + near[redo]
            codes, flags = _refine(xs[redo], codebook, dist_block[redo], reach, fragile_rtol)
            out[start + redo] = codes
            if fragile is not None:
                fragile[start + redo] = flags
    return out if fragile is None else (out, fragile)


class VectorQuantizer(nn.Module):
    """Vector quantizer with an exponential-moving-average codebook.

    Inputs are (N, D) or channel-first (B, D, ...) (1D or 2D); the optional `mask` ((N,) or (B, 1, ...)
    or (B, ...), nonzero = valid) keeps padding out of the statistics and the loss. The codebook is a
    buffer updated by EMA (sonnet's VectorQuantizerEMA): no gradient, no optimizer.
    """

    def __init__(
        self,
        codebook_size: int,
        dim: int,
        config: QuantizerConfig | None = None,
        chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
    ):
        super().__init__()
        self.codebook_size = codebook_size
        self.dim = dim
        self.config = config or QuantizerConfig()
        self.chunk_elements = chunk_elements
        self.register_buffer("codebook", torch.randn(codebook_size, dim))
        self.register_buffer("cluster_size", torch.zeros(codebook_size))  # EMA of per-step counts
        self.register_buffer("embed_sum", torch.zeros(codebook_size, dim))  # EMA of per-step sums
        self.register_buffer("initted", torch.tensor(False))
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))  # EMA steps taken
        self._initted = False  # host mirror of `initted`, so the hot path never reads the buffer

    # ------------------------------------------------------------------ verbs
    def encode(self, x: Tensor, fragile_rtol: float | None = None) -> Tensor | tuple[Tensor, Tensor]:
        """(N, D) or (B, D, ...) -> codes (N,) or (B, ...): each vector's nearest code, exact (see nearest_codes).

        With fragile_rtol, also (same shape, bool) where a move of fragile_rtol * |x| could change the code.
        """
        flat, restore = self.flatten(x)
        with torch.autocast(device_type=x.device.type, enabled=False):
            out = nearest_codes(flat.detach().float(), self.codebook, self.chunk_elements, table=self.search_table(),
                                fragile_rtol=fragile_rtol)
        return restore(out) if fragile_rtol is None else (restore(out[0]), restore(out[1]))

    def decode(self, codes: Tensor) -> Tensor:
        """codes (N,) or (B, ...) -> vectors (N, D) or channel-first (B, D, ...)."""
        vectors = F.embedding(codes, self.codebook)  # (..., D)
        if codes.dim() == 1:
            return vectors
        return vectors.movedim(-1, 1)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> QuantizerOutput:
        flat_in, restore = self.flatten(x)
        valid = None if mask is None else self._flat_mask(mask, x).to(flat_in.device)
        with torch.autocast(device_type=x.device.type, enabled=False):
            flat = flat_in.float()  # distances and statistics stay fp32 whatever the autocast state
            if self.training and not self._initted:
                self._init_codebook(flat.detach(), valid)
            codes = nearest_codes(flat.detach(), self.codebook, self.chunk_elements, exact=not self.training)
            q = F.embedding(codes, self.codebook)  # (N, D), the codebook before this step's update

            # Commitment loss: only the encoder output moves towards the (stop-gradient) code.
            err = (flat - q.detach()).pow(2).mean(1)  # (N,)
            commit = self.config.beta * _masked_mean(err, valid)

            counts = _counts(codes, valid, self.codebook_size)  # (K,) float, this process only
            revived = torch.zeros((), device=x.device)
            if self.training:
                counts, revived = self._ema_update(flat.detach(), codes, counts, valid)
            probs = counts / counts.sum().clamp_min(1.0)
            perplexity = torch.exp(-(probs * torch.log(probs.clamp_min(1e-10))).sum())
            usage = (counts > 0).float().mean()

            # Straight-through estimator: the value is exactly q, the gradient wrt x exactly identity.
            quantized = q.detach() + (flat - flat.detach())
        return QuantizerOutput(
            quantized=restore(quantized, channels=True),
            codes=restore(codes),
            commit_loss=commit,
            perplexity=perplexity,
            usage=usage,
            revived=revived,
        )

    # --------------------------------------------------------------- internals
    def search_table(self) -> SearchTable:
        """The codebook prepared for `nearest_codes`, kept until the codebook changes. Block-wise coding (`vqtok
        encode`) searches once per block of audio, and remaking the table each time cost speech-16k ~0.2 ms a search on
        one thread."""
        cb = self.codebook
        key = (cb.data_ptr(), cb._version, cb.dtype, cb.device)  # in-place updates (EMA, k-means) bump _version
        cached = self.__dict__.get("_table")
        if cached is None or cached[0] is not cb or cached[1] != key:
            cached = (cb, key, search_table(cb))
            self._table = cached
        return cached[2]

    def flatten(self, x: Tensor):
        """x -> (N, D) and a function mapping (N,) or (N, D) results back to x's layout."""
        if x.dim() == 2:
            if x.shape[1] != self.dim:
                raise ValueError(f"expected (N, {self.dim}) input, got {tuple(x.shape)}")
            return x, lambda t, channels=False: t
        if x.shape[1] != self.dim:
            raise ValueError(f"expected (B, {self.dim}, ...) input, got {tuple(x.shape)}")
        spatial = x.shape[2:]
        flat = rearrange(x, "b d ... -> b ... d").reshape(-1, self.dim)  # (B*prod(spatial), D)

        def restore(t: Tensor, channels: bool = False) -> Tensor:
            if channels:  # (N, D) -> (B, D, ...)
                return t.reshape(x.shape[0], *spatial, self.dim).movedim(-1, 1)
            return t.reshape(x.shape[0], *spatial)  # (N,) -> (B, ...)

        return flat, restore

    def _flat_mask(self, mask: Tensor, x: Tensor) -> Tensor:
        """Any mask layout that broadcasts to x without its channel axis -> (N,) bool."""
        if x.dim() == 2:
            return mask.reshape(-1).bool()
        if mask.dim() == x.dim():  # (B, 1, ...)
            mask = mask[:, 0]
        return mask.expand(x.shape[0], *x.shape[2:]).reshape(-1).bool()

    @torch.no_grad()
    def _init_codebook(self, flat: Tensor, valid: Tensor | None) -> None:
        """k-means on the first training batch (all ranks' vectors), then seed the EMA state."""
        data = flat if valid is None else flat[valid]
        if _dist_ready():  # gather every rank's vectors so all ranks compute the same codebook
            sizes = [torch.zeros(1, dtype=torch.long, device=data.device) for _ in range(dist.get_world_size())]
            dist.all_gather(sizes, torch.tensor([data.shape[0]], device=data.device))
            longest = int(max(s.item() for s in sizes))
            padded = torch.zeros(longest, self.dim, device=data.device)
            padded[: data.shape[0]] = data
            parts = [torch.empty_like(padded) for _ in sizes]
            dist.all_gather(parts, padded)
            data = torch.cat([p[: int(s.item())] for p, s in zip(parts, sizes)])
        k = self.codebook_size
        gen = torch.Generator(device=data.device)
        gen.manual_seed(self.config.seed)  # the same draws on every rank, over the same gathered data
        centers = kmeans_plus_plus(data, k, gen)
        for _ in range(self.config.kmeans_iters):
            assign = nearest_codes(data, centers, self.chunk_elements, exact=False)
            sums = torch.zeros_like(centers).index_add_(0, assign, data)
            counts = torch.bincount(assign, minlength=k).float()
            # Empty clusters keep their centre (a batch vector), so no code starts at zero.
            centers = torch.where(counts[:, None] > 0, sums / counts.clamp_min(1)[:, None], centers)
        expected = data.shape[0] / k  # every code starts as an average code
        self.codebook.copy_(centers)
        self.cluster_size.fill_(expected)
        self.embed_sum.copy_(centers * expected)
        self.codebook.copy_(self._codebook_from_stats())
        self.initted.fill_(True)
        self._initted = True

    def _decay(self) -> Tensor:
        decay = torch.tensor(self.config.decay, device=self.updates.device)
        if self.config.decay_warmup > 0:
            n = self.updates.float()
            decay = torch.minimum(decay, (1 + n) / (self.config.decay_warmup + n))
        return decay

    def _codebook_from_stats(self) -> Tensor:
        """codebook = sums / Laplace-smoothed counts; the smoothing lives only in this temporary."""
        n = self.cluster_size
        total = n.sum()
        smoothed = (n + self.config.eps) / (total + self.codebook_size * self.config.eps) * total
        return self.embed_sum / smoothed[:, None]

    @torch.no_grad()
    def _ema_update(self, flat: Tensor, codes: Tensor, counts: Tensor, valid: Tensor | None):
        """EMA step plus dead-code revival, with one all-reduce and no host sync."""
        k, cfg = self.codebook_size, self.config
        src = flat if valid is None else flat * valid[:, None]
        sums = torch.zeros(k, self.dim, device=flat.device).index_add_(0, codes, src)  # (K, D)

        # Revival candidates: one random valid vector per code. Under DDP code j takes its candidate
        # from rank j % world, so after the all-reduce every rank holds the same candidates. The draw
        # uses the global RNG, whose state the trainer saves for an exact resume.
        weights = torch.ones(flat.shape[0], device=flat.device) if valid is None else valid.float()
        weights = weights + 1e-12  # multinomial needs a positive total even for an all-padding batch
        pick = torch.multinomial(weights, k, replacement=True)
        candidates = flat[pick]  # (K, D)
        world, rank = (dist.get_world_size(), dist.get_rank()) if _dist_ready() else (1, 0)
        if world > 1:
            own = (torch.arange(k, device=flat.device) % world == rank).float()[:, None]
            packed = torch.cat([counts[:, None], sums, candidates * own], 1)  # (K, 1 + 2D)
            dist.all_reduce(packed)  # the one collective of the step
            counts, sums, candidates = packed[:, 0], packed[:, 1 : 1 + self.dim], packed[:, 1 + self.dim :]

        decay = self._decay()  # 0-dim tensor: no host sync
        self.cluster_size.mul_(decay).add_(counts * (1 - decay))
        self.embed_sum.mul_(decay).add_(sums * (1 - decay))
        self.updates.add_(1)

        expected = counts.sum() / k  # expected use per code in this (global) step
        threshold = torch.clamp(cfg.dead_ratio * expected, min=cfg.dead_floor)
        dead = self.cluster_size < threshold  # (K,)
        # A revived code restarts as an average code at its candidate: counts, sums and codebook agree.
        self.cluster_size.copy_(torch.where(dead, expected, self.cluster_size))
        self.embed_sum.copy_(torch.where(dead[:, None], candidates * expected, self.embed_sum))
        self.codebook.copy_(self._codebook_from_stats())
        return counts, dead.sum().float()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        key = prefix + "initted"
        if key in state_dict:
            self._initted = bool(state_dict[key])


def kmeans_plus_plus(data: Tensor, k: int, gen: torch.Generator, budget: float = 2e10) -> Tensor:
    """k-means++ seeding (Arthur & Vassilvitskii 2007): (N, D) -> (K, D) centres.

    Cost is K passes over the data, so the seeding uses a random subsample when K * N * D > budget.
    With fewer vectors than codes, the extra centres repeat data vectors.
    """
    n, d = data.shape
    if n <= k:
        idx = torch.randint(n, (k,), generator=gen, device=data.device)
        idx[:n] = torch.arange(n, device=data.device)
        return data[idx].clone()
    keep = int(min(n, max(k, budget // (k * d))))
    if keep < n:
        data = data[torch.randperm(n, generator=gen, device=data.device)[:keep]]
    centers = torch.empty(k, d, device=data.device)
    first = torch.randint(data.shape[0], (1,), generator=gen, device=data.device)
    centers[0] = data[first[0]]
    d2 = (data - centers[0]).pow(2).sum(1)  # (N,) squared distance to the nearest chosen centre
    for j in range(1, k):
        # Draw proportionally to D^2; an all-zero D^2 (duplicates) falls back to uniform.
        weights = d2 + 1e-12 * (d2.sum() == 0)
        pick = torch.multinomial(weights, 1, generator=gen)[0]
        centers[j] = data[pick]
        d2 = torch.minimum(d2, (data - centers[j]).pow(2).sum(1))
    return centers


def _counts(codes: Tensor, valid: Tensor | None, k: int) -> Tensor:
    """Histogram of codes over valid positions, (K,) float, without a dense one-hot."""
    if valid is None:
        return torch.bincount(codes, minlength=k).float()
    return torch.bincount(codes, weights=valid.float(), minlength=k).float()


def _masked_mean(values: Tensor, valid: Tensor | None) -> Tensor:
    if valid is None:
        return values.mean()
    w = valid.float()
    return (values * w).sum() / w.sum().clamp_min(1.0)
