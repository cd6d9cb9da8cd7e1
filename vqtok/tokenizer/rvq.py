"""ResidualVQ: Q stages of EMA codebooks, each quantizing what the stages before it left (SoundStream, EnCodec)."""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor, nn

from vqtok.tokenizer.quantizer import QuantizerConfig, QuantizerOutput, VectorQuantizer


class ResidualVQ(nn.Module):
    """x ~ e_1[c_1] + e_2[c_2] + ... + e_Q[c_Q], stage q quantizing x minus the first q - 1 stages' vectors.

    Every stage is a `VectorQuantizer` (EMA codebook, k-means init on its first batch, dead-code revival), so the
    search of each stage is the exact one. Inputs are (N, D) or channel-first (B, D, ...); codes come out with the
    stage axis after the batch axis: (N, Q) or (B, Q, ...). A prefix of the stages is a coarser code of the same
    input: `encode(x, codebooks=n)` / `decode(codes[:, :n])` trade bits for quality at run time.

    Quantizer dropout (SoundStream section 3.3): in training, with probability `dropout` an item keeps only a
    random prefix of 1..Q stages (uniform), so every prefix is trained to stand on its own.
    """

    def __init__(self, codebooks: int, codebook_size: int, dim: int, config: QuantizerConfig | None = None,
                 dropout: float = 0.0):
        super().__init__()
        if codebooks < 1:
            raise ValueError(f"a residual VQ needs at least one codebook, got {codebooks}")
        if not 0.0 <= dropout <= 1.0:
            raise ValueError(f"quantizer dropout is a probability, got {dropout}")
        self.codebook_size = codebook_size
        self.dim = dim
        self.dropout = dropout
        self.config = config or QuantizerConfig()
        stage_configs = [_stage_config(self.config, q) for q in range(codebooks)]
        self.stages = nn.ModuleList(VectorQuantizer(codebook_size, dim, c) for c in stage_configs)

    @property
    def codebooks(self) -> int:
        return len(self.stages)

    def _prefix(self, codebooks: int | None) -> int:
        n = self.codebooks if codebooks is None else codebooks
        if not 1 <= n <= self.codebooks:
            raise ValueError(f"codebooks must be between 1 and {self.codebooks}, got {codebooks}")
        return n

    # ------------------------------------------------------------------ verbs
    @torch.no_grad()
    def encode(self, x: Tensor, codebooks: int | None = None) -> Tensor:
        """(N, D) or (B, D, ...) -> codes (N, n) or (B, n, ...) for the first n = `codebooks` stages (default all)."""
        residual = x.detach().float()
        codes = []
        for stage in self.stages[: self._prefix(codebooks)]:
            c = stage.encode(residual)
            residual = residual - stage.decode(c)
            codes.append(c)
        return torch.stack(codes, 1)

    def decode(self, codes: Tensor, prefixes: Tensor | None = None) -> Tensor:
        """codes (N, n) or (B, n, ...) of the first n stages -> the sum of their vectors, (N, D) or (B, D, ...).

        prefixes: (N,) or (B,) stage counts: item i sums only its first prefixes[i] stages (as quantizer dropout
        trains them), for training a decoder on every prefix with the codes fixed.
        """
        n = codes.shape[1]
        if n > self.codebooks:
            raise ValueError(f"codes hold {n} codebooks; this quantizer has {self.codebooks}")
        keep = None if prefixes is None else _prefix_mask(prefixes, n)  # (B, n)
        out = None
        for q in range(n):
            v = self.stages[q].decode(codes[:, q])
            if keep is not None:
                v = v * keep[:, q].view(-1, *[1] * (v.dim() - 1)).to(v.dtype)
            out = v if out is None else out + v
        return out

    def draw_prefixes(self, batch: int, device: torch.device | str = "cpu") -> Tensor:
        """(batch,) stage counts as quantizer dropout draws them: with probability `dropout` uniform in 1..Q, else Q."""
        drawn = torch.randint(1, self.codebooks + 1, (batch,), device=device)
        dropped = torch.rand(batch, device=device) < self.dropout
        return torch.where(dropped, drawn, torch.full_like(drawn, self.codebooks))

    def forward(self, x: Tensor, mask: Tensor | None = None, codebooks: int | None = None) -> QuantizerOutput:
        """Training / evaluation pass. Scalars of QuantizerOutput are per stage here: perplexity, usage, revived (Q,).

        mask: as VectorQuantizer's (nonzero = valid). codebooks: use only that prefix (evaluation of a bitrate);
        in training, quantizer dropout draws each item's prefix instead. Stages an item does not use leave its
        vectors out of their statistics; their codes are still returned (as a full-rate encode would give them).
        """
        n_used = self._prefix(codebooks)
        active = self._active_stages(x, n_used)  # (B, Q) bool, or None: every stage for every item
        residual = x.detach().float()
        total = torch.zeros_like(residual)
        codes, outs = [], []
        for q, stage in enumerate(self.stages):
            stage_mask = _stage_mask(mask, active, q, x)
            out = stage(residual, mask=stage_mask)
            vectors = out.quantized.detach()  # (B, D, ...) the code vectors
            keep = 1.0 if active is None else active[:, q].view(-1, *[1] * (x.dim() - 1)).to(vectors.dtype)
            total = total + vectors * keep
            residual = residual - vectors
            codes.append(out.codes)
            outs.append(out)
        # Commitment: the encoder output towards the (stop-gradient) sum of the stages the item uses.
        err = (x.float() - total).pow(2).mean(1)  # (B, ...)
        valid = None if mask is None else _valid(mask, x)
        commit = self.config.beta * (err.mean() if valid is None else (err * valid).sum() / valid.sum().clamp_min(1))
        quantized = total.to(x.dtype) + (x - x.detach())  # straight through: value = the sum, d/dx = identity
        return QuantizerOutput(
            quantized=quantized,
            codes=torch.stack(codes, 1),
            commit_loss=commit,
            perplexity=torch.stack([o.perplexity for o in outs]),
            usage=torch.stack([o.usage for o in outs]),
            revived=torch.stack([o.revived for o in outs]),
        )

    def _active_stages(self, x: Tensor, n_used: int) -> Tensor | None:
        """(B, Q) bool: which stages each item uses in this pass; None when all items use the first n_used."""
        if not (self.training and self.dropout > 0):
            return None if n_used == self.codebooks else _prefix_mask(
                torch.full((x.shape[0],), n_used, device=x.device), self.codebooks)
        n = self.draw_prefixes(x.shape[0], x.device).clamp_max(n_used)
        return _prefix_mask(n, self.codebooks)


def _stage_config(config: QuantizerConfig, q: int) -> QuantizerConfig:
    """Stage q's settings: the shared ones with its own k-means seed, so stages do not start from one draw."""
    return dataclasses.replace(config, seed=config.seed + q)


def _prefix_mask(n: Tensor, codebooks: int) -> Tensor:
    """n (B,) prefix lengths -> (B, Q) bool, True for stages q < n."""
    return torch.arange(codebooks, device=n.device)[None, :] < n[:, None]


def _valid(mask: Tensor, x: Tensor) -> Tensor:
    """A VectorQuantizer-style mask ((B, 1, ...) or (B, ...)) -> (B, ...) float over x's positions."""
    if mask.dim() == x.dim():
        mask = mask[:, 0]
    return mask.expand(x.shape[0], *x.shape[2:]).float()


def _stage_mask(mask: Tensor | None, active: Tensor | None, q: int, x: Tensor) -> Tensor | None:
    """Stage q's statistics mask: the input's valid positions of the items that use stage q."""
    if active is None:
        return mask
    items = active[:, q].view(-1, *[1] * (x.dim() - 2)).float()  # (B, 1, ...)
    return items.expand(x.shape[0], *x.shape[2:]) if mask is None else _valid(mask, x) * items
