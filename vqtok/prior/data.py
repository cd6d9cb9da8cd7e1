"""A dataset encoded once by the frozen tokenizer (CodeSet), cached on disk and keyed by the tokenizer."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor
from tqdm import tqdm

from vqtok.codec import Codec
from vqtok.data.build import build_dataset, check_dims
from vqtok.data.tokens import TokenDataset
from vqtok.errors import VqtokError
from vqtok.files import atomic_write
from vqtok.modality import modality_of
from vqtok.prior.layout import LAYOUTS
from vqtok.tokenizer.checkpoint import reads_codes_of
from vqtok.tokenizer.codes import describe_tokenizer, tokenizer_summary

logger = logging.getLogger(__name__)

CACHE_VERSION = 1


@dataclass
class CodeSet:
    """Every item's codes, per level (top first), kept in memory as padded tensors.

    levels[l]: (N, H, W) maps (images) or (N, T_max) sequences zero-padded past lengths[l] (audio; Q residual
    codebooks interleaved frame by frame, T * Q codes an item). How they are stacked and batched is their layout's
    (`LAYOUTS[dims]`: vqtok.prior.layout).
    lengths[l]: (N,) codes per item (audio; for maps every item has H * W).
    labels: (N,) int64, -1 without a label. sizes: (N,) input samples at the tokenizer's rate (audio) or pixels.
    """

    levels: list[Tensor]
    lengths: list[Tensor]
    labels: Tensor
    sizes: Tensor
    dims: int

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, index: list[int] | Tensor, windows: list[tuple[int, int] | None] | None = None) -> dict:
        """Items `index` -> {"codes": per level, "lengths": per level, "labels", "sizes"}; sequences are
        cropped to the longest item of the batch. windows[l] = (window, align): level l's sequences longer
        than `window` codes are cut to a random window of that many starting at a multiple of `align`
        (training on sequences longer than the prior reads at once; torch's global RNG draws the starts)."""
        index = torch.as_tensor(index, dtype=torch.long)
        layout = LAYOUTS[self.dims]
        codes, lengths = [], []
        for lv, (level, length) in enumerate(zip(self.levels, self.lengths)):
            c, n = layout.batch(level[index], length[index], windows[lv] if windows else None)
            codes.append(c.long())
            lengths.append(n)
        return {"codes": codes, "lengths": lengths, "labels": self.labels[index], "sizes": self.sizes[index]}


def _dataset(data, split: str, tok):
    """(dataset, labels, count) of a prior recipe's data section for `split` ("train" or "test")."""
    check_dims(data, tok.dims)
    dataset = build_dataset(data, split, tok.sample_rate)
    limit = data.max_items if split == "train" else data.valid_items
    count = len(dataset) if limit is None else min(limit, len(dataset))
    return dataset, [int(label) for label in dataset.labels[:count]], count


def codes_from_manifest(tok, data, split: str) -> CodeSet:
    """A CodeSet of the files `vqtok encode` listed in data.root (a manifest.jsonl), read as they are: the
    tokenizer must be the one that encoded them."""
    if data.shifts:
        raise VqtokError("data.shifts needs the data itself; with data.kind 'codes' the codes are fixed (set 0)")
    limit = data.max_items if split == "train" else data.valid_items
    tokens = TokenDataset(data.root, split=split, rule=data.rule, max_items=limit)
    if not reads_codes_of(tok, tokens.tokenizer):
        raise VqtokError(f"{tokens.manifest}: encoded by {describe_tokenizer(tokens.tokenizer)}, but this prior "
                         f"models {describe_tokenizer(tokenizer_summary(tok))}; encode with that tokenizer")
    fewer = {int(c.shape[0]) for levels in tokens.codes for c in levels} - {tok.codebooks}
    if tok.codebooks > 1 and fewer:
        raise VqtokError(f"{tokens.manifest}: files with {min(fewer)} of the tokenizer's {tok.codebooks} "
                         "codebooks; a prior models all of them (vqtok encode without --codebooks)")
    return _stack([[c.to(torch.int32) for c in levels] for levels in tokens.codes], tok.dims, tokens.labels,
                   tokens.sizes, tokens.manifest)


@torch.no_grad()
def encode_dataset(tok, data, split: str, progress: bool = False, batch_size: int = 128) -> CodeSet:
    """Encode the `split` of a prior recipe's data section with the frozen tokenizer `tok` (eval mode).

    With data.shifts > 0 the training images are also encoded shifted by every (dy, dx) up to that many
    pixels (more data for the prior: a digit moved by a pixel is still a digit), and training clips are also
    encoded delayed by data.shifts fractions of a code's hop; the copies come after the originals.
    """
    dataset, labels, count = _dataset(data, split, tok)
    tok.eval()
    codec = Codec(tok)
    modality = modality_of(tok.config)
    items: list[list[Tensor]] = []  # per item, its codes per level
    sizes: list[int] = []
    # one pass over the data per offset: (dy, dx) for images, a delay in samples for audio
    shifts = modality.prior_shifts(data, split, tok)
    labels = labels * len(shifts)
    bar = tqdm(total=count * len(shifts), desc=f"encoding {split}", unit="item", disable=not progress, leave=False)
    for shift in shifts:
        for start in range(0, count, batch_size):
            stop = min(start + batch_size, count)
            codes, size = modality.encode_for_prior(codec, dataset, range(start, stop), shift)
            items += codes
            sizes += size
            bar.update(stop - start)
    bar.close()
    return _stack(items, tok.dims, labels, sizes, data.root)


def _stack(items: list[list[Tensor]], dims: int, labels: list[int], sizes: list[int], where) -> CodeSet:
    """Per item, per level codes (top first) -> a CodeSet: maps stacked, sequences zero-padded (their layout's)."""
    stacked = [LAYOUTS[dims].stack([item[lv] for item in items], where) for lv in range(len(items[0]))]
    return CodeSet([codes for codes, _ in stacked], [lengths for _, lengths in stacked],
                   torch.tensor(labels, dtype=torch.long), torch.tensor(sizes), dims)


def cache_key(tok, data, split: str) -> str:
    """What the cached codes depend on: the tokenizer (fingerprint), the data section and the split."""
    fields = asdict(data)
    fields.pop("cache")
    fields.pop("max_items" if split != "train" else "valid_items")
    fields["root"] = str(Path(fields["root"]).expanduser().resolve())
    return json.dumps({"version": CACHE_VERSION, "tokenizer": tok.fingerprint, "split": split, "data": fields},
                      sort_keys=True)


def load_or_encode(tok, data, split: str, folder: str | Path, progress: bool = False) -> tuple[CodeSet, bool]:
    """The CodeSet of `split`, read from `folder/{split}.pt` when its key matches, else encoded and written.

    Returns (codes, reused). A cache made by another tokenizer (or for other data) is replaced.
    """
    if tok.fingerprint is None:
        raise VqtokError("the tokenizer has no fingerprint: load it with load_tokenizer (or save it) first")
    if data.kind == "codes":  # already encoded: read, nothing to cache
        return codes_from_manifest(tok, data, split), False
    path = Path(folder) / f"{split}.pt"
    key = cache_key(tok, data, split)
    if path.is_file():
        try:
            stored = torch.load(path, map_location="cpu", weights_only=True)
            if stored.get("key") == key:
                codes = CodeSet(stored["levels"], stored["lengths"], stored["labels"], stored["sizes"],
                                int(stored["dims"]))
                logger.info("%s: reusing the codes of %d %s items", path, len(codes), split)
                return codes, True
            logger.info("%s: made by another tokenizer or for other data; encoding again", path)
        except Exception as err:  # noqa: BLE001 - an unreadable cache is only re-made
            logger.warning("%s: unreadable code cache (%s); encoding again", path, type(err).__name__)
    codes = encode_dataset(tok, data, split, progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    stored = {"key": key, "levels": codes.levels, "lengths": codes.lengths, "labels": codes.labels,
              "sizes": codes.sizes, "dims": codes.dims}
    atomic_write(path, lambda tmp: torch.save(stored, tmp))
    return codes, False
