"""CodePrior: one prior network over one tokenizer level, with the layout that turns codes into targets."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from vqtok.prior.vocab import Vocab
from vqtok.prior.guidance import drop_labels
from vqtok.prior.pixelcnn import GatedPixelCNN, PixelCNNConfig
from vqtok.prior.sampling import decode_transformer, sample_pixelcnn
from vqtok.prior.transformer import CausalTransformer, TransformerConfig

# kind -> (network class, its config dataclass); a recipe's model.kind picks one.
NETWORKS: dict[str, tuple[type[nn.Module], type]] = {
    "pixelcnn": (GatedPixelCNN, PixelCNNConfig),
    "transformer": (CausalTransformer, TransformerConfig),
}
# Config fields that follow from the tokenizer and the data, never from a recipe.
DERIVED_FIELDS = ("num_codes", "num_classes", "cond_codes", "cond_ratio", "null_class", "codebooks")


@dataclass
class PriorLayout:
    """How one level's codes become a sequence of targets (stored as JSON in a prior checkpoint).

    * 2-D levels (images) keep their (H, W) map; a Transformer reads it in raster order.
    * 1-D levels without an upper level have natural lengths: the sequence ends with EOS. Ids follow the
      vocabulary of `vqtok.prior.vocab.Vocab`: codes 0..K-1, PAD = K, BOS = K+1, EOS = K+2, so the
      Transformer has K + 3 outputs; PAD (after the end) is never a target and BOS never appears (the
      Transformer has its own start token), so neither is ever sampled.
    * A bottom level is conditioned on the top codes (the whole upper map, known when it is sampled):
      2-D through the PixelCNN's spatial conditioning, 1-D with exactly `cond_ratio` codes per top code.
    * A 1-D level of Q > 1 residual codebooks, (Q, T) per item, is one sequence of T * Q codes interleaved frame
      by frame (`flatten`); it has no EOS (a token file's shape says its length; samples are drawn to a length).
    * With `context`, a 1-D sequence longer than the network's max_len is read in windows of max_len codes:
      the first window predicts its codes from the start, each next one starts max_len - context codes later
      and predicts the codes after the `context` it re-reads (`windows`). Training reads random windows.
    """

    kind: str  # pixelcnn | transformer
    level: str  # codes | top | bottom (vqtok.tokenizer.codes.LEVEL_NAMES)
    level_index: int  # 0 = top (or the only level)
    codebook_size: int  # K of this level
    dims: int  # 1 (audio) or 2 (images)
    shape: list[int] | None = None  # (H, W) of every map (2-D); None for 1-D
    eos: bool = False  # 1-D sequences end with Vocab(K).eos
    cond_codebook_size: int | None = None  # K of the top level when this is a bottom prior
    cond_ratio: int | None = None  # bottom codes per top code along each axis
    num_classes: int | None = None  # class-conditional prior
    class_counts: list[int] | None = None  # training labels per class: p(y) for unconditional sampling
    max_length: int | None = None  # 1-D: longest training sequence (codes, without EOS)
    cond_dropout: float = 0.0  # training labels dropped to the null class (index num_classes) with this probability
    guidance: float = 1.0  # default classifier-free guidance weight when sampling (1: the conditional model)
    codebooks: int = 1  # 1-D: codes per frame (residual codebooks), interleaved frame by frame
    window: int | None = None  # 1-D without EOS: codes per window (the network's max_len); None: one window
    context: int | None = None  # codes each window after the first re-reads (a multiple of codebooks)

    @property
    def null_class(self) -> bool:
        """The network has the extra "no class" row of classifier-free guidance (checkpoints before it: no)."""
        return bool(self.num_classes) and self.cond_dropout > 0

    def flatten(self, codes: Tensor) -> Tensor:
        """One item's codes as the sequence the network reads: (Q, T) -> (T * Q,) frame by frame; (T,) as is."""
        return rearrange(codes, "q t -> (t q)") if self.codebooks > 1 else codes

    def unflatten(self, seq: Tensor) -> Tensor:
        """The inverse of `flatten`: (T * Q,) -> (Q, T)."""
        return rearrange(seq, "(t q) -> q t", q=self.codebooks) if self.codebooks > 1 else seq

    def windows(self, length: int) -> list[tuple[int, int, int]]:
        """(start, first, stop) of the windows that read a sequence of `length` codes: the window holds codes
        start..stop-1 and scores first..stop-1 (the others are its context)."""
        if self.window is None or length <= self.window:
            return [(0, 0, length)]
        step = self.window - self.context
        out = [(0, 0, self.window)]
        while out[-1][2] < length:
            start = out[-1][0] + step
            out.append((start, start + self.context, min(start + self.window, length)))
        return out

    @property
    def vocab(self) -> Vocab:
        return Vocab(self.codebook_size)

    @property
    def num_outputs(self) -> int:
        """Logits per position: K, or K + 3 with the PAD/BOS/EOS ids of a sequence with EOS."""
        return self.vocab.size if self.eos else self.codebook_size


def build_network(layout: PriorLayout, config: dict) -> nn.Module:
    """The network of `layout.kind` from the recipe's `model.config` plus the fields the layout fixes."""
    cls, config_cls = NETWORKS[layout.kind]
    derived = {"num_codes": layout.num_outputs, "num_classes": layout.num_classes,
               "cond_codes": layout.cond_codebook_size, "null_class": layout.null_class}
    if layout.kind == "transformer":
        derived |= {"cond_ratio": layout.cond_ratio, "codebooks": layout.codebooks}
    return cls.from_config(config_cls(**{**config, **derived}))


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
        """1-D with EOS: (B, T) codes -> (B, T + 1) with EOS at each length and PAD after; plus the target mask.

        2-D and conditioned 1-D levels are their own targets (mask: positions < length, or None for maps).
        """
        if self.layout.dims == 2:
            return codes, None
        steps = torch.arange(codes.shape[1] + int(self.layout.eos), device=codes.device)  # (T',)
        if not self.layout.eos:
            return codes, steps[None] < lengths[:, None]
        vocab = self.layout.vocab
        out = F.pad(codes, (0, 1), value=vocab.pad)  # (B, T + 1)
        out = torch.where(steps[None] < lengths[:, None], out, torch.full_like(out, vocab.pad))
        out[torch.arange(len(codes)), lengths] = vocab.eos
        return out, steps[None] <= lengths[:, None]

    def logits(self, tokens: Tensor, labels: Tensor | None, cond: Tensor | None) -> Tensor:
        """Logits with the classes last: (B, H, W, K') for maps, (B, T, K') for sequences."""
        if self.layout.kind == "pixelcnn":
            return rearrange(self.net(tokens, labels, cond), "b k h w -> b h w k")
        if self.layout.dims == 2:  # raster order, then back to the map
            height, width = tokens.shape[-2:]
            flat = self.net(rearrange(tokens, "b h w -> b (h w)"), labels, None)
            return rearrange(flat, "b (h w) k -> b h w k", h=height, w=width)
        if cond is not None:
            cond = self._cond_1d(cond, tokens.shape[1])
        return self.net(tokens, labels, cond)

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
        """`nll` of whole 1-D sequences (B, T) read in the layout's windows (`PriorLayout.windows`): each code
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

    def _cond_1d(self, cond: Tensor, length: int) -> Tensor:
        """Top codes for a 1-D bottom of `length` positions: padded by repeating the last top code if short."""
        need = math.ceil(length / self.layout.cond_ratio)
        if cond.shape[1] < need:
            cond = torch.cat([cond, cond[:, -1:].expand(-1, need - cond.shape[1])], dim=1)
        return cond

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
        lay = self.layout
        guidance = lay.guidance if guidance is None else guidance
        if lay.dims == 2:
            if lay.kind == "pixelcnn":
                return sample_pixelcnn(self.net, n, tuple(lay.shape), labels, cond, temperature, top_k, top_p,
                                       generator, batch_size, guidance)
            flat = decode_transformer(self.net, n, lay.shape[0] * lay.shape[1], labels, None, temperature, top_k,
                                      top_p, generator, batch_size=batch_size, guidance=guidance).codes
            return rearrange(flat, "b (h w) -> b h w", h=lay.shape[0])
        if cond is not None:  # 1-D bottom: cond_ratio codes per top code, tops of different lengths in one batch
            tops = [torch.as_tensor(top).long() for top in cond]
            top_lengths = torch.tensor([len(top) for top in tops])
            padded = torch.nn.utils.rnn.pad_sequence(tops, batch_first=True)  # (n, T_top_max)
            out = decode_transformer(self.net, n, padded.shape[1] * lay.cond_ratio, labels, padded, temperature,
                                     top_k, top_p, generator, batch_size=batch_size, guidance=guidance,
                                     cond_lengths=top_lengths)
            return [out.codes[i, : int(m) * lay.cond_ratio].clone() for i, m in enumerate(top_lengths)]
        if not lay.eos:  # residual codebooks or windows: `max_length` codes (default: one window's worth)
            length = max_length or lay.window or lay.max_length
            if not lay.window:  # one pass: at most what the network reads at once
                length = min(length, self.net.config.max_len)
            length -= length % lay.codebooks  # whole frames
            out = decode_transformer(self.net, n, length, labels, None, temperature, top_k, top_p, generator,
                                     batch_size=batch_size, guidance=guidance, context=lay.context)
            return [lay.unflatten(codes.clone()) for codes in out.codes]
        # 1-D with EOS: stop each sequence there (at most max_length codes, one position left for EOS)
        limit = self.net.config.max_len - 1
        max_length = min(limit, max_length or lay.max_length or limit)
        vocab = lay.vocab
        out = decode_transformer(self.net, n, max_length, labels, None, temperature, top_k, top_p, generator,
                                 batch_size=batch_size, guidance=guidance, stop=vocab.eos,
                                 banned=(vocab.pad, vocab.bos))  # never targets, never sampled
        return [out.codes[i, : int(m)].clone() for i, m in enumerate(out.lengths)]
