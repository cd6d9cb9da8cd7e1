"""CodePrior: one prior network over one tokenizer level, with the layout that reads its codes (vqtok.prior.layout)."""

from __future__ import annotations

from dataclasses import asdict

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from vqtok.prior.guidance import drop_labels
from vqtok.prior.layout import PriorLayout
from vqtok.prior.networks import build_network


class CodePrior(nn.Module):
    """An autoregressive prior over one tokenizer level: `nll` for training, `sample` for generation.

    codes: (B, H, W) maps (2-D) or (B, T) sequences padded past their `lengths` (1-D), ids < K.
    labels: (B,) when class-conditional; cond: the top level's codes (B, h, w) or (B, T_top) for a bottom prior.
    """

    def __init__(self, layout: PriorLayout, config: dict):
        super().__init__()
        self.layout = layout
        self.net = build_network(layout, config)
        self.tokenizer: dict = {}  # tokenizer_summary of the tokenizer whose codes this models (set when saved/loaded)
        self.train_info: dict = {}

    @property
    def config(self) -> dict:
        """The network's full config (what rebuilds it, num_codes and the rest included)."""
        return asdict(self.net.config)

    # ----------------------------------------------------------------- training
    def targets(self, codes: Tensor, lengths: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """The targets of `codes` and their mask (None: every position), as the layout makes them."""
        return self.layout.targets(codes, lengths)

    def logits(self, tokens: Tensor, labels: Tensor | None, cond: Tensor | None) -> Tensor:
        """Logits with the classes last: (B, H, W, K') for maps, (B, T, K') for sequences."""
        return self.layout.logits(self.net, tokens, labels, cond)

    def nll(self, codes: Tensor, labels: Tensor | None = None, cond: Tensor | None = None,
            lengths: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Summed NLL in nats over the targets, their count, and the summed NLL of the EOS targets alone.

        Divide the first two for the training loss; the EOS part lets reports give NLL per code apart.
        """
        tokens, mask = self.targets(codes, lengths)
        if self.training and labels is not None and self.layout.null_class:  # classifier-free guidance training
            labels = drop_labels(labels, self.layout.cond_dropout, self.layout.num_classes)
        logits = self.logits(tokens, labels, cond).float()
        per_token = F.cross_entropy(rearrange(logits, "b ... k -> b k ..."), tokens, reduction="none")
        if mask is None:
            return per_token.sum(), torch.tensor(per_token.numel(), device=codes.device), per_token.new_zeros(())
        per_token = per_token * mask
        eos = per_token[tokens == self.layout.vocab.eos].sum() if self.layout.eos else per_token.new_zeros(())
        return per_token.sum(), mask.sum(), eos

    def windowed_nll(self, codes: Tensor, lengths: Tensor, labels: Tensor | None = None,
                     batch_size: int = 16) -> tuple[Tensor, Tensor, Tensor]:
        """`nll` of whole 1-D sequences (B, T) read in the layout's windows (`SequenceLayout.windows`): each code
        scored once, in the window that scores it, as `vqtok compress` codes it."""
        lay = self.layout
        rows = [(i, *w) for i, n in enumerate(lengths.tolist()) for w in lay.windows(int(n))]
        total, count = codes.new_zeros((), dtype=torch.float32), 0
        span = lay.window or int(lengths.max())
        for at in range(0, len(rows), batch_size):
            part = rows[at : at + batch_size]
            x = torch.stack([F.pad(codes[i, a:c], (0, span - (c - a))) for i, a, b, c in part])
            steps = torch.arange(span, device=codes.device)
            mask = torch.stack([(steps >= b - a) & (steps < c - a) for i, a, b, c in part])
            rows_labels = None if labels is None else labels[[i for i, *_ in part]]
            logits = self.logits(x, rows_labels, None).float()
            per_token = F.cross_entropy(rearrange(logits, "b t k -> b k t"), x, reduction="none")
            total = total + (per_token * mask).sum()
            count += int(mask.sum())
        return total, torch.tensor(count, device=codes.device), total.new_zeros(())

    # ----------------------------------------------------------------- sampling
    def sample(self, n: int, labels: Tensor | None = None, cond: Tensor | None = None,
               temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
               generator: torch.Generator | None = None, max_length: int | None = None,
               batch_size: int | None = None, guidance: float | None = None) -> list[Tensor] | Tensor:
        """n samples: (n, H, W) maps, or a list of n (T_i,) sequences (1-D, natural lengths).

        A bottom prior takes the top codes as `cond` ((n, h, w), or a list of n (T_top,) for 1-D).
        guidance: classifier-free guidance weight (None: the recipe's, `layout.guidance`; 1: none).
        A sequence without EOS (residual codebooks, windows) has `max_length` codes, whole frames: (Q, T) each.
        """
        guidance = self.layout.guidance if guidance is None else guidance
        return self.layout.sample(self.net, n, labels, cond, temperature=temperature, top_k=top_k, top_p=top_p,
                                  generator=generator, batch_size=batch_size, guidance=guidance,
                                  max_length=max_length)
