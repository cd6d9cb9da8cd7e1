"""Causal (decoder-only) Transformer prior over code sequences, with a KV cache for incremental decoding."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from vqtok.errors import VqtokError
from vqtok.prior.sampling import TransformerSteps, decode_transformer

# Conventions (read these before using the logits):
#
# * Start token. The model prepends one start token to the codes: a learned BOS, or, when num_classes is
#   set, a learned BOS *per class* (the class-label prefix token). Input position t holds the start token
#   for t = 0 and codes[:, t - 1] otherwise, so logits[:, t] predicts codes[:, t] from codes[:, :t].
#   codes[:, -1] is embedded but influences no logit.
# * Upper-level conditioning (hierarchical audio prior, cf. Jukebox's upsamplers, Dhariwal et al. 2020).
#   The top codes (B, T_top) are fully known: they are embedded, passed through a small non-causal conv
#   stack and repeated cond_ratio times, then added at input position t as the features of top frame
#   t // cond_ratio, i.e. the frame of the code *being predicted* at t (not of the code fed in at t,
#   which is codes[:, t - 1]). A learned phase embedding (t % cond_ratio) tells where inside the frame t is.
#   The conditioning path never sees bottom codes, so it cannot leak future ones.
# * null_class=True adds one class, index num_classes, meaning "no class" (classifier-free guidance, Ho &
#   Salimans 2022): its start token (and class vector) are trained on labels dropped to it.
# * class_bias=True also adds a learned class vector at every input position (on top of the class start
#   token), so every layer sees the class directly instead of only through attention to position 0.
# * 2D code maps are modelled in raster order: (B, H, W) -> (B, H * W) with rearrange "b h w -> b (h w)".
# * codebooks=Q > 1 (residual codebooks, several codes per frame) models the codes interleaved frame by frame,
#   (B, Q, T) -> (B, T * Q) with rearrange "b q t -> b (t q)": code t belongs to codebook t % Q, so each code is
#   predicted from every earlier frame and the coarser codebooks of its own frame. Every codebook has its own
#   input embedding (ids code + K * q of one table) and its own output head (rows K * q .. K * q + K - 1 of one
#   linear layer). A sequence is read from a frame boundary: the start token stands before codebook 0.


@dataclass
class TransformerConfig:
    """Everything that builds a `CausalTransformer` (the JSON a checkpoint stores)."""

    num_codes: int
    dim: int = 256
    layers: int = 6
    heads: int = 8
    max_len: int = 1024
    num_classes: int | None = None
    cond_codes: int | None = None
    cond_ratio: int | None = None
    cond_layers: int = 2
    positions: str = "rotary"
    dropout: float = 0.0
    class_bias: bool = False  # also add a learned class vector at every position (needs num_classes)
    null_class: bool = False  # one more class, index num_classes: the unconditional model (guidance)
    codebooks: int = 1  # codes interleaved frame by frame from this many codebooks of num_codes each


POSITIONS = ("rotary", "learned")
KVPair = tuple[Tensor, Tensor]  # one layer's (keys, values), each (B, heads, capacity, head_dim)


@dataclass
class KVCache:
    """Keys and values of the positions decoded so far, for `CausalTransformer.step`.

    ``keys[l]`` / ``values[l]``: (B, heads, capacity, head_dim) per layer, filled up to ``pos``.
    ``start``: (B, 1, D) start-token embedding; ``cond``: (B, capacity, D) per-position features (upper
    level and/or class vector, see `_features`) or None.
    ``pos`` is the absolute position of the next input token; `step` advances it.
    """

    keys: list[Tensor]
    values: list[Tensor]
    start: Tensor
    cond: Tensor | None
    pos: int = 0

    @property
    def capacity(self) -> int:
        return self.keys[0].shape[2]


class Rotary(nn.Module):
    """Rotary position embedding (Su et al. 2021, RoFormer eq. 34), rotate-half layout, absolute positions."""

    def __init__(self, head_dim: int, max_len: int, base: float = 10000.0):
        super().__init__()
        inv_freq = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)  # (d/2,)
        angles = torch.outer(torch.arange(max_len, dtype=torch.float64), inv_freq)  # (max_len, d/2)
        self.register_buffer("cos", angles.cos().float(), persistent=False)
        self.register_buffer("sin", angles.sin().float(), persistent=False)

    def forward(self, x: Tensor, start: int) -> Tensor:
        """x (B, heads, L, d) at absolute positions start..start+L-1 -> rotated x."""
        length = x.shape[-2]
        cos, sin = self.cos[start : start + length], self.sin[start : start + length]  # (L, d/2)
        x1, x2 = x.chunk(2, dim=-1)
        return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class SelfAttention(nn.Module):
    """Multi-head causal self-attention through `F.scaled_dot_product_attention`."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, rotary: Rotary | None, start: int, kv: KVPair | None) -> Tensor:
        """x (B, L, D) at positions start..start+L-1; kv: this layer's cache buffers, updated (L = 1, or a prefill
        from position 0)."""
        q, k, v = rearrange(self.qkv(x), "b l (three h d) -> three b h l d", three=3, h=self.heads)
        if rotary is not None:
            q, k = rotary(q, start), rotary(k, start)
        length = x.shape[1]
        if kv is not None:  # one new position sees every cached key; a prefill from 0 is an ordinary causal pass
            keys, values = kv
            keys[:, :, start : start + length] = k
            values[:, :, start : start + length] = v
            k, v = keys[:, :, : start + length], values[:, :, : start + length]
        causal = length > 1  # a full pass, or a cache filled from position 0 (prefill)
        p = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=causal)
        return self.proj(rearrange(out, "b h l d -> b l (h d)"))


class Block(nn.Module):
    """Pre-norm Transformer block (GPT-2, Radford et al. 2019): x + attn(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads, dropout)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, rotary: Rotary | None, start: int, kv: KVPair | None) -> Tensor:
        x = x + self.drop(self.attn(self.norm1(x), rotary, start, kv))
        return x + self.drop(self.mlp(self.norm2(x)))


class _CondResBlock1d(nn.Module):
    """Non-causal residual conv block over the upper-level codes (fully known when sampling)."""

    def __init__(self, dim: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.GELU(), nn.Conv1d(dim, dim, 3, padding=1), nn.GELU(), nn.Conv1d(dim, dim, 1)
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.net(x)


class CausalTransformer(nn.Module):
    """Decoder-only Transformer prior: codes (B, T) -> logits (B, T, K), logits[:, t] predicts codes[:, t]
    from codes[:, :t] (see the conventions at the top of this file for the start token and conditioning).

    Full passes use ``forward``; incremental decoding uses ``new_cache`` then ``step`` once per position.
    """

    # What a prior's layout asks of its network (vqtok.prior.layout): a Transformer reads sequences, and code maps in
    # raster order; its upper level is a sequence (cond_ratio codes per top code), not a map; and its items are coded
    # one at a time, its linear layers going through a BLAS GEMM whose rounding depends on the number of rows
    # (vqtok.prior.coding).
    reads_sequences = True
    conditions_on_maps = False
    batchable = False

    def __init__(
        self,
        num_codes: int,
        dim: int = 256,
        layers: int = 6,
        heads: int = 8,
        max_len: int = 1024,
        num_classes: int | None = None,
        cond_codes: int | None = None,
        cond_ratio: int | None = None,
        cond_layers: int = 2,
        positions: str = "rotary",
        dropout: float = 0.0,
        class_bias: bool = False,
        null_class: bool = False,
        codebooks: int = 1,
    ):
        super().__init__()
        if positions not in POSITIONS:
            raise ValueError(f"positions={positions!r} is not one of {POSITIONS}")
        if dim % heads:
            raise ValueError(f"dim={dim} must be divisible by heads={heads}")
        if positions == "rotary" and (dim // heads) % 2:
            raise ValueError(f"rotary positions need an even head size, got dim // heads = {dim // heads}")
        if bool(cond_codes) != bool(cond_ratio):
            raise ValueError(
                f"cond_codes and cond_ratio go together (got cond_codes={cond_codes}, "
                f"cond_ratio={cond_ratio}): cond_ratio is how many bottom codes one top code covers"
            )
        if class_bias and not num_classes:
            raise ValueError("class_bias needs num_classes: it adds a learned vector per class")
        if null_class and not num_classes:
            raise ValueError("null_class needs num_classes: it is the extra class of classifier-free guidance")
        if codebooks < 1 or (codebooks > 1 and cond_codes):
            raise ValueError(f"codebooks={codebooks}: at least 1, and interleaved codebooks take no upper level")
        self.config = TransformerConfig(
            num_codes, dim, layers, heads, max_len, num_classes,
            cond_codes, cond_ratio, cond_layers, positions, dropout, class_bias, null_class, codebooks,
        )
        self.tok_emb = nn.Embedding(num_codes * codebooks, dim)
        if num_classes:
            rows = num_classes + int(null_class)
            self.class_start = nn.Embedding(rows, dim)  # one learned start token per class
            if class_bias:  # the class also added to every input position, as the PixelCNN's gate bias
                self.class_bias = nn.Embedding(rows, dim)
        else:
            self.bos = nn.Parameter(torch.zeros(dim))
        self.pos_emb = nn.Embedding(max_len, dim) if positions == "learned" else None
        self.rotary = Rotary(dim // heads, max_len) if positions == "rotary" else None
        if cond_codes:
            self.cond_embedding = nn.Embedding(cond_codes, dim)
            self.cond_net = nn.Sequential(*(_CondResBlock1d(dim) for _ in range(cond_layers)))
            self.cond_phase = nn.Embedding(cond_ratio, dim)
            self.cond_proj = nn.Linear(dim, dim)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(dim, heads, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_codes * codebooks)
        self.apply(self._init_weights)
        for block in self.blocks:  # GPT-2 scaled init of residual projections, 1/sqrt(2 * layers)
            for proj in (block.attn.proj, block.mlp[2]):
                nn.init.normal_(proj.weight, std=0.02 / math.sqrt(2 * layers))
        if not num_classes:
            nn.init.normal_(self.bos, std=0.02)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    @classmethod
    def from_config(cls, config: TransformerConfig) -> CausalTransformer:
        return cls(**asdict(config))

    @property
    def num_codes(self) -> int:
        return self.config.num_codes

    # --- conditioning ---

    def check_conditioning(self, labels: Tensor | None, cond: Tensor | None, length: int) -> None:
        """Raise a ValueError saying what to pass when labels / cond / length do not fit this model."""
        cfg, name = self.config, type(self).__name__
        if length > cfg.max_len:
            raise ValueError(f"{length} positions exceed max_len={cfg.max_len}; build with a larger max_len")
        if cfg.num_classes and labels is None:
            raise ValueError(f"this {name} is class-conditional (num_classes={cfg.num_classes}): pass labels")
        if not cfg.num_classes and labels is not None:
            raise ValueError(f"this {name} has no class conditioning (num_classes=None); pass labels=None")
        if cfg.cond_codes and cond is None:
            raise ValueError(
                f"this {name} is conditioned on top codes (cond_codes={cfg.cond_codes}): pass cond (B, T_top)"
            )
        if not cfg.cond_codes and cond is not None:
            raise ValueError(f"this {name} has no upper-level conditioning (cond_codes=None); pass cond=None")
        if cond is not None and length > cond.shape[1] * cfg.cond_ratio:
            raise ValueError(
                f"{length} positions need at least {math.ceil(length / cfg.cond_ratio)} top codes at "
                f"cond_ratio={cfg.cond_ratio}, got cond of length {cond.shape[1]}"
            )

    def _start(self, labels: Tensor | None, batch: int) -> Tensor:
        """Start token (B, 1, D): the class-label prefix token, or the learned BOS."""
        if self.config.num_classes:
            return rearrange(self.class_start(labels), "b d -> b 1 d")
        return self.bos.expand(batch, 1, -1)

    def encode_cond(self, cond: Tensor, length: int) -> Tensor:
        """Top codes (B, T_top) -> features (B, length, D); position t gets top frame t // cond_ratio."""
        ratio = self.config.cond_ratio
        x = rearrange(self.cond_embedding(cond), "b s d -> b d s")
        x = self.cond_net(x)  # non-causal: the top level is fully known
        x = rearrange(x, "b d s -> b s d").repeat_interleave(ratio, dim=1)[:, :length]  # (B, length, D)
        phase = self.cond_phase(torch.arange(length, device=cond.device) % ratio)  # (length, D)
        return self.cond_proj(x) + phase

    def _ragged_cond(self, cond: Tensor, cond_lengths: Tensor, length: int) -> Tensor:
        """Top codes (B, T_top) of which item i holds cond_lengths[i] -> features (B, length, D), each item
        encoded alone (the conv stack sees its own end, as when it is sampled alone), zero past its end."""
        ratio = self.config.cond_ratio
        out = self.tok_emb.weight.new_zeros(cond.shape[0], length, self.config.dim)
        for i, n in enumerate(cond_lengths.tolist()):
            span = min(length, n * ratio)
            out[i, :span] = self.encode_cond(cond[i : i + 1, :n], span)[0]
        return out

    def _features(self, labels: Tensor | None, cond: Tensor | None, length: int,
                  cond_lengths: Tensor | None = None) -> Tensor | None:
        """What is added at every input position (B, length, D): the upper-level features and, with
        class_bias, the class vector; None when there is neither."""
        features = None
        if cond is not None:
            features = (self.encode_cond(cond, length) if cond_lengths is None
                        else self._ragged_cond(cond, cond_lengths, length))
        if self.config.class_bias:
            vec = rearrange(self.class_bias(labels), "b d -> b 1 d")
            features = vec.expand(-1, length, -1) if features is None else features + vec
        return features

    # --- core ---

    def _embed(self, codes: Tensor, first: int) -> Tensor:
        """Codes (B, L), of which codes[:, 0] is code number `first` of the sequence -> embeddings (B, L, D)."""
        q = self.config.codebooks
        if q > 1:
            book = (torch.arange(codes.shape[1], device=codes.device) + first) % q
            codes = codes + self.config.num_codes * book
        return self.tok_emb(codes)

    def _head(self, x: Tensor, start: int) -> Tensor:
        """Features (B, L, D) at positions start..start+L-1 -> logits (B, L, K), each under its codebook's head."""
        q, k = self.config.codebooks, self.config.num_codes
        if q == 1:
            return self.head(x)
        weight, bias = self.head.weight.view(q, k, -1), self.head.bias.view(q, k)
        if x.shape[1] == 1:
            return F.linear(x, weight[start % q], bias[start % q])
        out = x.new_empty(*x.shape[:2], k)
        for b in range(q):  # one GEMM per codebook (every q-th position) rather than all Q * K logits everywhere
            rows = slice((b - start) % q, None, q)
            out[:, rows] = F.linear(x[:, rows], weight[b], bias[b])
        return out

    def _run(self, x: Tensor, start: int, features: Tensor | None, cache: KVCache | None) -> Tensor:
        """Input embeddings (B, L, D) at positions start..start+L-1 -> logits (B, L, K)."""
        length = x.shape[1]
        if self.pos_emb is not None:
            x = x + self.pos_emb(torch.arange(start, start + length, device=x.device))
        if features is not None:
            x = x + features[:, start : start + length]
        x = self.drop(x)
        for i, block in enumerate(self.blocks):
            kv = (cache.keys[i], cache.values[i]) if cache is not None else None
            x = block(x, self.rotary, start, kv)
        return self._head(self.norm(x), start)

    def _full(self, codes: Tensor, labels: Tensor | None, cond: Tensor | None, length: int) -> Tensor:
        """Full causal pass over the first ``length`` input positions [start, codes...] -> (B, length, K)."""
        self.check_conditioning(labels, cond, length)
        tokens = self._embed(codes, 0)  # (B, T, D); every code embedded so gradient checks see all of them
        x = torch.cat([self._start(labels, codes.shape[0]), tokens], dim=1)[:, :length]  # input t = code t-1
        return self._run(x, 0, self._features(labels, cond, length), None)

    def forward(self, codes: Tensor, labels: Tensor | None = None, cond: Tensor | None = None) -> Tensor:
        """codes (B, T) int64, labels (B,) | None, cond (B, T_top) | None -> logits (B, T, K).

        logits[:, t] predicts codes[:, t] from codes[:, :t] (the start token is prepended internally).
        """
        return self._full(codes, labels, cond, codes.shape[1])

    def next_logits(self, prefix: Tensor, labels: Tensor | None = None, cond: Tensor | None = None) -> Tensor:
        """Logits (B, K) for code number prefix.shape[1], recomputing the whole prefix (B, t); t may be 0."""
        return self._full(prefix, labels, cond, prefix.shape[1] + 1)[:, -1]

    # --- incremental decoding ---

    def new_cache(
        self, batch: int, length: int, labels: Tensor | None = None, cond: Tensor | None = None,
        cond_lengths: Tensor | None = None,
    ) -> KVCache:
        """Empty cache for decoding ``length`` codes; labels / cond are fixed for the whole sequence.

        cond_lengths (B,): top codes of items of different lengths, padded at the end; item i uses its first
        cond_lengths[i] codes only (and is meant to be cut at cond_lengths[i] * cond_ratio positions).
        """
        self.check_conditioning(labels, cond, length)
        cfg = self.config
        param = self.tok_emb.weight
        shape = (batch, cfg.heads, length, cfg.dim // cfg.heads)
        keys = [param.new_zeros(shape) for _ in self.blocks]
        values = [param.new_zeros(shape) for _ in self.blocks]
        return KVCache(keys, values, self._start(labels, batch), self._features(labels, cond, length, cond_lengths))

    def prefill(self, codes: Tensor, cache: KVCache) -> Tensor:
        """Feed the start token and codes (B, L) into an empty cache in one causal pass; returns the logits (B, K)
        of code number L (as L + 1 calls of `step` would, up to rounding)."""
        if cache.pos != 0:
            raise ValueError(f"prefill fills an empty cache; this one is at position {cache.pos}")
        length = codes.shape[1] + 1
        if length > cache.capacity:
            raise ValueError(f"{length} positions exceed the KV cache ({cache.capacity})")
        x = torch.cat([cache.start, self._embed(codes, 0)], dim=1)
        logits = self._run(x, 0, cache.cond, cache)[:, -1]
        cache.pos = length
        return logits

    def step(self, tokens: Tensor | None, cache: KVCache) -> Tensor:
        """Feed one input position and return logits (B, K) for the code at position cache.pos.

        At pos 0 pass tokens=None (the start token is fed); afterwards pass the previous codes (B,).
        O(pos) work: keys/values of earlier positions are read from the cache, which is updated in place.
        """
        pos = cache.pos
        if pos >= cache.capacity:
            raise ValueError(f"KV cache is full ({cache.capacity} positions); make a longer one (new_cache)")
        if (tokens is None) != (pos == 0):
            raise ValueError(f"step at position {pos}: tokens=None at position 0 only, previous codes after")
        x = cache.start if pos == 0 else self._embed(tokens[:, None], pos - 1)  # (B, 1, D)
        logits = self._run(x, pos, cache.cond, cache)[:, -1]
        cache.pos = pos + 1
        return logits

    # --- a code map as a prior reads it, in raster order (vqtok.prior.layout.MapLayout) ---

    def map_logits(self, codes: Tensor, labels: Tensor | None = None, cond: Tensor | None = None) -> Tensor:
        """codes (B, H, W) read in raster order -> logits (B, H, W, K)."""
        height, width = codes.shape[-2:]
        flat = self(rearrange(codes, "b h w -> b (h w)"), labels, cond)
        return rearrange(flat, "b (h w) k -> b h w k", h=height, w=width)

    def sample_map(self, n: int, shape: tuple[int, int], labels: Tensor | None = None, cond: Tensor | None = None,
                   **options) -> Tensor:
        """n maps (n, H, W) drawn in raster order by `decode_transformer` (options: temperature, top_k, top_p,
        generator, batch_size, guidance)."""
        flat = decode_transformer(self, n, shape[0] * shape[1], labels, cond, **options).codes
        return rearrange(flat, "b (h w) -> b h w", h=shape[0])

    def map_steps(self, batch: int, shape: tuple[int, int], labels: Tensor | None = None,
                  cond: Tensor | None = None) -> TransformerSteps:
        """The incremental path over `batch` maps of `shape` in raster order (entropy coding); a map of more codes
        than max_len is refused."""
        length = shape[0] * shape[1]
        if length > self.config.max_len:
            raise VqtokError(f"{length} steps (codes) exceed the prior's max_len={self.config.max_len}; "
                             "this item is too long for it")
        return TransformerSteps(self, batch, length, labels, cond)
