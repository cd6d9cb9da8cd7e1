"""How a prior reads one tokenizer level's codes: as (H, W) maps (`MapLayout`) or as sequences (`SequenceLayout`).

Each layout owns what differs between the two shapes of codes: the targets and logits of training, sampling, the
steps and symbols of entropy coding (vqtok.prior.coding), and how a data set's codes are stacked and batched
(vqtok.prior.data). What differs between networks it asks the network (vqtok.prior.networks). A layout is stored as
JSON in a prior checkpoint (`PriorLayout.record`, whose `dims` names the class in LAYOUTS; `layout_from_record`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import ClassVar

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from vqtok.config import from_dict
from vqtok.errors import VqtokError
from vqtok.prior.networks import NETWORKS, network_class
from vqtok.prior.sampling import TransformerSteps, decode_transformer
from vqtok.prior.vocab import Vocab


@dataclass
class PriorLayout:
    """What every layout holds: the network, the level and its codebook, and what the codes are conditioned on."""

    network: str  # pixelcnn | transformer (vqtok.prior.networks.NETWORKS)
    level: str  # codes | top | bottom (vqtok.tokenizer.codes.LEVEL_NAMES)
    level_index: int  # 0 = top (or the only level)
    codebook_size: int  # K of this level
    cond_codebook_size: int | None = None  # K of the top level when this is a bottom prior
    cond_ratio: int | None = None  # bottom codes per top code along each axis
    num_classes: int | None = None  # class-conditional prior
    class_counts: list[int] | None = None  # training labels per class: p(y) for unconditional sampling
    cond_dropout: float = 0.0  # training labels dropped to the null class (index num_classes) with this probability
    guidance: float = 1.0  # default classifier-free guidance weight when sampling (1: the conditional model)

    dims: ClassVar[int]  # axes of one item's codes: the key of LAYOUTS, kept in the checkpoint JSON

    @property
    def null_class(self) -> bool:
        """The network has the extra "no class" row of classifier-free guidance (checkpoints before it: no)."""
        return bool(self.num_classes) and self.cond_dropout > 0

    @property
    def vocab(self) -> Vocab:
        return Vocab(self.codebook_size)

    def record(self) -> dict:
        """The JSON a checkpoint stores: the fields, and `dims` for the class."""
        return {"dims": self.dims, **asdict(self)}

    def identity(self) -> dict:
        """The fields a prior's fingerprint is taken over (vqtok.prior.coding.prior_fingerprint), as the first
        checkpoint format held them (one record for maps and sequences, the network under "kind"), so that the
        fingerprints of priors made then, which their .vqz files name, stay what they were."""
        record = {**FIRST_FORMAT, **self.record()}
        record["kind"] = record.pop("network")
        return record


# The fields of the other shape of codes in a first-format record, at the values it gave them.
FIRST_FORMAT = {"shape": None, "eos": False, "max_length": None, "codebooks": 1, "window": None, "context": None}


def _networks_that(can: str) -> str:
    """The names of the networks whose class attribute `can` is true, for an error message."""
    return " or ".join(name for name, (cls, _) in NETWORKS.items() if getattr(cls, can))


def _context_error(context: int, codebooks: int) -> VqtokError:
    return VqtokError(f"model.context reads a 1-D top level in windows that start on frames: it must be a multiple "
                      f"of the tokenizer's {codebooks} codebooks (got {context})")


def _check_codes(codes: np.ndarray, codebook_size: int, ends: bool = True) -> None:
    """Refuse decoded codes outside the codebook, or (ends False) a sequence whose EOS is missing."""
    if (codes >= codebook_size).any() or not ends:
        raise VqtokError("the payload decodes to invalid codes (corrupted, or coded with another prior)")


@dataclass
class MapLayout(PriorLayout):
    """A 2-D level (images): every item an (H, W) map of one shape. A PixelCNN reads it whole, a Transformer in
    raster order; a bottom level is conditioned on the whole top map, through the PixelCNN's spatial conditioning."""

    shape: list[int] = field(kw_only=True)  # (H, W) of every map

    dims: ClassVar[int] = 2
    # A map has no end token and one codebook, and is read in one pass: what code reading any layout asks.
    eos: ClassVar[bool] = False
    codebooks: ClassVar[int] = 1
    window: ClassVar[int | None] = None
    context: ClassVar[int | None] = None

    def __post_init__(self) -> None:
        net = network_class(self.network)
        if self.level == "bottom" and not net.conditions_on_maps:
            raise VqtokError("a VQ-VAE-2 bottom prior over 2-D maps is conditioned spatially on the top map: "
                             f"use model.network {_networks_that('conditions_on_maps')}")

    @classmethod
    def from_codes(cls, codes: Tensor, lengths: Tensor, *, codebooks: int, context: int | None, max_len: int,
                   **shared) -> MapLayout:
        """The layout of a level whose training codes are `codes` (N, H, W); `shared`: the PriorLayout fields."""
        layout = cls(shape=list(codes.shape[1:]), **shared)
        if context is not None:  # windows read sequences
            raise _context_error(context, codebooks)
        return layout

    @property
    def num_outputs(self) -> int:
        """Logits per position: K."""
        return self.codebook_size

    def card(self) -> dict:
        """How the codes are read, as `vqtok info` shows it."""
        return {"codebooks": 1, "shape": self.shape, "eos": False, "window": None, "context": None}

    # ----------------------------------------------------------------- training
    def targets(self, codes: Tensor, lengths: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """Maps (B, H, W) are their own targets, every position one (mask None)."""
        return codes, None

    def logits(self, net: nn.Module, tokens: Tensor, labels: Tensor | None, cond: Tensor | None) -> Tensor:
        """(B, H, W, K) logits; cond: the top map (B, h, w) of a bottom prior."""
        return net.map_logits(tokens, labels, cond)

    # ----------------------------------------------------------------- sampling
    def sample(self, net: nn.Module, n: int, labels: Tensor | None, cond: Tensor | None, *, temperature: float,
               top_k: int | None, top_p: float | None, generator: torch.Generator | None, batch_size: int | None,
               guidance: float, max_length: int | None = None) -> Tensor:
        """n maps (n, H, W) of the layout's shape; cond: the top maps (n, h, w) of a bottom prior."""
        return net.sample_map(n, tuple(self.shape), labels, cond, temperature=temperature, top_k=top_k,
                              top_p=top_p, generator=generator, batch_size=batch_size, guidance=guidance)

    # ----------------------------------------------------------------- entropy coding
    def check_fit(self, shape: tuple[int, ...], name: str) -> None:
        """Every map fits (a PixelCNN reads any size; a Transformer refuses more than max_len at its steps)."""

    def symbol_count(self, shape: tuple[int, ...]) -> int:
        return math.prod(shape)

    def symbols(self, codes: np.ndarray) -> np.ndarray:
        """A map's codes in coding order: raster order."""
        return np.asarray(codes, dtype=np.int64).reshape(-1)

    def coding_steps(self, net: nn.Module, batch: int, shape: tuple[int, ...], labels: Tensor | None,
                     top: Tensor | None):
        """The network's incremental path over `batch` maps of `shape` (top: their top maps, for a bottom prior)."""
        return net.map_steps(batch, tuple(shape), labels, top)

    def from_symbols(self, symbols: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        """Coded symbols (b, H * W) -> maps (b, H, W), checked."""
        _check_codes(symbols, self.codebook_size)
        return symbols.reshape(len(symbols), *shape)

    # ----------------------------------------------------------------- a data set's codes
    @staticmethod
    def stack(codes: list[Tensor], where) -> tuple[Tensor, Tensor]:
        """Items' maps (H, W) -> (N, H, W) and their code counts (N,); maps of different shapes are refused."""
        shapes = {tuple(c.shape) for c in codes}
        if len(shapes) > 1:
            raise VqtokError(f"{where}: images give code maps of different shapes {sorted(shapes)}; "
                             "set data.image_size so every map has one shape")
        return torch.stack(codes), torch.full((len(codes),), codes[0].numel())

    @staticmethod
    def batch(codes: Tensor, lengths: Tensor, window: tuple[int, int] | None) -> tuple[Tensor, Tensor]:
        """Stacked maps as the network reads them: whole."""
        return codes, lengths


@dataclass
class SequenceLayout(PriorLayout):
    """A 1-D level (audio): every item a sequence of its own length, read by a network that reads sequences.

    * A level without an upper level and with one codebook ends each sequence with EOS. Ids follow the vocabulary of
      `vqtok.prior.vocab.Vocab`: codes 0..K-1, PAD = K, BOS = K+1, EOS = K+2, so the Transformer has K + 3 outputs;
      PAD (after the end) is never a target and BOS never appears (the Transformer has its own start token), so
      neither is ever sampled.
    * A bottom level is conditioned on the whole top sequence, known when it is sampled, with exactly `cond_ratio`
      codes per top code.
    * A level of Q > 1 residual codebooks, (Q, T) per item, is one sequence of T * Q codes interleaved frame by frame
      (`flatten`); it has no EOS (a token file's shape says its length; samples are drawn to a length).
    * With `context`, a sequence longer than the network's max_len is read in windows of max_len codes: the first
      window predicts its codes from the start, each next one starts max_len - context codes later and predicts the
      codes after the `context` it re-reads (`windows`). Training reads random windows.
    """

    eos: bool = False  # sequences end with Vocab(K).eos
    max_length: int | None = None  # longest training sequence (codes, without EOS)
    codebooks: int = 1  # codes per frame (residual codebooks), interleaved frame by frame
    window: int | None = None  # without EOS: codes per window (the network's max_len); None: one window
    context: int | None = None  # codes each window after the first re-reads (a multiple of codebooks)

    dims: ClassVar[int] = 1

    def __post_init__(self) -> None:
        if not network_class(self.network).reads_sequences:
            raise VqtokError("audio codes are sequences of natural lengths: use model.network "
                             f"{_networks_that('reads_sequences')}")
        if self.context is not None and (self.context % self.codebooks or self.level == "bottom"):
            raise _context_error(self.context, self.codebooks)

    @classmethod
    def from_codes(cls, codes: Tensor, lengths: Tensor, *, codebooks: int, context: int | None, max_len: int,
                   **shared) -> SequenceLayout:
        """The layout of a level whose training codes are `codes` (N, T_max), `lengths` (N,) each, for a network
        of `max_len` positions; `shared`: the PriorLayout fields. A sequence has EOS unless it is conditioned,
        has residual codebooks or is read in windows (`context`)."""
        windowed = context is not None
        layout = cls(eos=shared["level"] != "bottom" and codebooks == 1 and not windowed,
                     max_length=int(lengths.max()), codebooks=codebooks, window=max_len if windowed else None,
                     context=context, **shared)
        if not layout.window:
            need = layout.max_length + int(layout.eos)  # the longest sequence (and its EOS)
            if need > max_len:
                raise VqtokError(f"the longest training sequence needs {need} positions, more than "
                                 f"model.config.max_len={max_len}; raise it, or read it in windows (model.context)")
        return layout

    @property
    def num_outputs(self) -> int:
        """Logits per position: K, or K + 3 with the PAD/BOS/EOS ids of a sequence with EOS."""
        return self.vocab.size if self.eos else self.codebook_size

    def card(self) -> dict:
        """How the codes are read, as `vqtok info` shows it."""
        return {"codebooks": self.codebooks, "shape": None, "eos": self.eos, "window": self.window,
                "context": self.context}

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

    def upper_codes(self, cond: Tensor, length: int) -> Tensor:
        """Top codes for a bottom of `length` positions: padded by repeating the last top code if short."""
        need = math.ceil(length / self.cond_ratio)
        if cond.shape[1] < need:
            cond = torch.cat([cond, cond[:, -1:].expand(-1, need - cond.shape[1])], dim=1)
        return cond

    # ----------------------------------------------------------------- training
    def targets(self, codes: Tensor, lengths: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """With EOS: (B, T) codes -> (B, T + 1) with EOS at each length and PAD after; plus the target mask.

        Sequences without EOS are their own targets, masked to positions < length.
        """
        steps = torch.arange(codes.shape[1] + int(self.eos), device=codes.device)  # (T',)
        if not self.eos:
            return codes, steps[None] < lengths[:, None]
        vocab = self.vocab
        out = F.pad(codes, (0, 1), value=vocab.pad)  # (B, T + 1)
        out = torch.where(steps[None] < lengths[:, None], out, torch.full_like(out, vocab.pad))
        out[torch.arange(len(codes)), lengths] = vocab.eos
        return out, steps[None] <= lengths[:, None]

    def logits(self, net: nn.Module, tokens: Tensor, labels: Tensor | None, cond: Tensor | None) -> Tensor:
        """(B, T, K') logits; cond: the top codes (B, T_top) of a bottom prior."""
        if cond is not None:
            cond = self.upper_codes(cond, tokens.shape[1])
        return net(tokens, labels, cond)

    # ----------------------------------------------------------------- sampling
    def sample(self, net: nn.Module, n: int, labels: Tensor | None, cond: list | None, *, temperature: float,
               top_k: int | None, top_p: float | None, generator: torch.Generator | None, batch_size: int | None,
               guidance: float, max_length: int | None = None) -> list[Tensor]:
        """n sequences: (T_i,) of natural lengths with EOS; (Q, T) frames of `max_length` codes without (residual
        codebooks, windows); for a bottom prior cond_ratio codes per code of its top sequence (cond: n of them)."""
        if cond is not None:  # cond_ratio codes per top code, tops of different lengths in one batch
            tops = [torch.as_tensor(top).long() for top in cond]
            top_lengths = torch.tensor([len(top) for top in tops])
            padded = torch.nn.utils.rnn.pad_sequence(tops, batch_first=True)  # (n, T_top_max)
            out = decode_transformer(net, n, padded.shape[1] * self.cond_ratio, labels, padded, temperature, top_k,
                                     top_p, generator, batch_size=batch_size, guidance=guidance,
                                     cond_lengths=top_lengths)
            return [out.codes[i, : int(m) * self.cond_ratio].clone() for i, m in enumerate(top_lengths)]
        if not self.eos:  # residual codebooks or windows: `max_length` codes (default: one window's worth)
            length = max_length or self.window or self.max_length
            if not self.window:  # one pass: at most what the network reads at once
                length = min(length, net.config.max_len)
            length -= length % self.codebooks  # whole frames
            out = decode_transformer(net, n, length, labels, None, temperature, top_k, top_p, generator,
                                     batch_size=batch_size, guidance=guidance, context=self.context)
            return [self.unflatten(codes.clone()) for codes in out.codes]
        # with EOS: stop each sequence there (at most max_length codes, one position left for EOS)
        limit = net.config.max_len - 1
        max_length = min(limit, max_length or self.max_length or limit)
        vocab = self.vocab
        out = decode_transformer(net, n, max_length, labels, None, temperature, top_k, top_p, generator,
                                 batch_size=batch_size, guidance=guidance, stop=vocab.eos,
                                 banned=(vocab.pad, vocab.bos))  # never targets, never sampled
        return [out.codes[i, : int(m)].clone() for i, m in enumerate(out.lengths)]

    # ----------------------------------------------------------------- entropy coding
    def check_fit(self, shape: tuple[int, ...], name: str) -> None:
        """Refuse codes of another shape than the prior reads: a level of Q residual codebooks must hold all Q."""
        q = self.codebooks
        if q > 1 and (len(shape) != 2 or shape[0] != q):
            have = f"{shape[0]} codebooks" if len(shape) == 2 else f"codes of shape {tuple(shape)}"
            raise VqtokError(f"{name}: {have}, but the prior models all {q} codebooks of each frame; compress a "
                             "file encoded with every codebook (vqtok encode without --codebooks)")

    def symbol_count(self, shape: tuple[int, ...]) -> int:
        """The codes, and the end of a sequence with EOS."""
        return math.prod(shape) + int(self.eos)

    def symbols(self, codes: np.ndarray) -> np.ndarray:
        """An item's codes in coding order: frame by frame (residual codebooks), then EOS for a sequence with it."""
        flat = self.flatten(torch.from_numpy(np.asarray(codes, dtype=np.int64))).numpy().reshape(-1)
        return np.append(flat, self.vocab.eos) if self.eos else flat

    def coding_steps(self, net: nn.Module, batch: int, shape: tuple[int, ...], labels: Tensor | None,
                     top: Tensor | None) -> TransformerSteps:
        """The Transformer's incremental path over `batch` items of `shape` (top: their top codes, for a bottom
        prior); without windows, a sequence longer than max_len is refused."""
        count = self.symbol_count(shape)
        if top is not None:
            return TransformerSteps(net, batch, count, labels, self.upper_codes(top, count))
        if count > net.config.max_len and not self.window:
            raise VqtokError(f"{count} steps (codes{' + EOS' if self.eos else ''}) exceed the prior's "
                             f"max_len={net.config.max_len}; this item is too long for it")
        return TransformerSteps(net, batch, count, labels, context=self.context)

    def from_symbols(self, symbols: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        """Coded symbols (b, count) -> codes (b, *shape), checked: codes below K, and EOS at the end if it has one."""
        codes = symbols[:, : math.prod(shape)]
        _check_codes(codes, self.codebook_size, ends=not self.eos or bool((symbols[:, -1] == self.vocab.eos).all()))
        return np.stack([self.unflatten(torch.from_numpy(c)).numpy() for c in codes]).reshape(len(codes), *shape)

    # ----------------------------------------------------------------- a data set's codes
    @staticmethod
    def stack(codes: list[Tensor], where) -> tuple[Tensor, Tensor]:
        """Items' codes, (T,) or residual codebooks (Q, T), -> the sequences the prior reads (frame by frame, as
        `flatten`), zero-padded to (N, T_max), and their lengths (N,)."""
        codes = [c.t().reshape(-1) if c.dim() == 2 else c for c in codes]
        n = torch.tensor([len(c) for c in codes])
        return torch.stack([F.pad(c, (0, int(n.max()) - len(c))) for c in codes]), n

    @staticmethod
    def batch(codes: Tensor, lengths: Tensor, window: tuple[int, int] | None) -> tuple[Tensor, Tensor]:
        """Padded sequences (B, T_max) cropped to the longest of the batch; with window = (codes, align), those
        longer than a window are cut to a random one (`random_windows`)."""
        if window and int(lengths.max()) > window[0]:
            codes, lengths = random_windows(codes, lengths, *window)
        return codes[:, : int(lengths.max())], lengths


def random_windows(codes: Tensor, lengths: Tensor, window: int, align: int) -> tuple[Tensor, Tensor]:
    """(B, T) padded sequences -> (B, window) random windows of them (an item that fits stays whole), lengths.

    The windows start at multiples of `align` (frames), drawn from torch's global RNG."""
    room = (lengths - window).clamp_min(0) // align  # starts 0, align, ..., room * align
    starts = (torch.rand(len(lengths)) * (room + 1)).long().clamp_max(room) * align
    cols = starts[:, None] + torch.arange(window)
    out = codes.gather(1, cols.clamp_max(codes.shape[1] - 1))
    return out, (lengths - starts).clamp_max(window)


# Axes of one item's codes -> the layout that reads them.
LAYOUTS: dict[int, type[PriorLayout]] = {2: MapLayout, 1: SequenceLayout}


def layout_from_record(record: dict) -> PriorLayout:
    """A layout from its checkpoint JSON (`PriorLayout.record`), strictly (an unknown key is an error). A record of
    the first format (the network under "kind", the other shape's fields at FIRST_FORMAT's values) reads too."""
    record = dict(record)
    cls = LAYOUTS[record.pop("dims")]
    if "kind" in record:  # the first format
        record["network"] = record.pop("kind")
        own = {f.name for f in fields(cls)}
        other = {key for key, value in record.items()
                 if key not in own and key in FIRST_FORMAT and value == FIRST_FORMAT[key]}
        record = {key: value for key, value in record.items() if key not in other}
    return from_dict(cls, record)
