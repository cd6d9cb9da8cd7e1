"""TokenDataset: a folder encoded by `vqtok encode` (its manifest.jsonl) as training data for a downstream model.

Vocabulary layout, per level (K = that level's codebook size, see `Vocab`)::

    0 .. K-1   the codes, exactly as in the codes files
    K          PAD   (fills batches past each item's length; never a target)
    K + 1      BOS   (prepended when add_bos=True)
    K + 2      EOS   (appended when add_eos=True)
    size = K + 3     (the embedding / output size of a model over this level)

A VQ-VAE-2's two levels each have their own layout (top first). Items are
``{"codes": LongTensor, "length": int, "label": int (-1 if none), "index": int}`` for a single level and
lists per level (``"codes": [top, bottom]``, ``"length": [t_top, t_bottom]``) for two. Audio codes are
(T,), image codes (H, W). `collate` pads a batch with PAD to the longest item (both axes for images)
and adds a boolean ``mask`` (True on real tokens, BOS/EOS included).

A multi-codebook tokenizer's (Q, T) codes come in `layout` (data/layouts.py): ``flat`` (Q * T,) ids
q * K + code, one vocabulary of Q * K codes (+ PAD, BOS, EOS after them); ``delay`` (Q, T + Q - 1), MusicGen's
delay pattern padded with PAD; ``stack`` (T, Q), each frame's codes side by side.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from vqtok.data import layouts
from vqtok.data.audio import get_rule
from vqtok.errors import VqtokError
from vqtok.prior.vocab import Vocab
from vqtok.tokenizer.checkpoint import load_tokenizer, locate_tokenizer
from vqtok.tokenizer.codes import describe_tokenizer, read_codes, same_codes

logger = logging.getLogger(__name__)

class TokenDataset(Dataset):
    """Codes, lengths and labels listed in a manifest.jsonl written by `vqtok encode` (or the rows of its
    `--format parquet` files: a .parquet file or a folder of them).

    Every codes file is read and checked once at construction (sidecar, dtype, id range, shapes) and
    all must come from one tokenizer. `add_bos` / `add_eos` wrap each audio sequence (1-D codes only).
    `split` ("train" or "test") keeps the files that the audio label/split `rule` (data/audio.py RULES)
    places there by their codes path; a rule's label fills in for a manifest line without one.
    `sizes` holds each item's input size: samples at the tokenizer's rate (audio) or pixels (images).
    """

    def __init__(self, manifest: str | os.PathLike, add_bos: bool = False, add_eos: bool = False,
                 max_items: int | None = None, split: str | None = None, rule: str | None = "hash",
                 layout: str = "flat") -> None:
        path = Path(manifest)
        rows = None
        if path.suffix == ".parquet" or (path.is_dir() and not (path / "manifest.jsonl").is_file()
                                         and any(path.glob("*.parquet"))):
            from vqtok.data.parquet import codes_by_path  # pyarrow is an optional extra: needed only here

            rows = codes_by_path(path)  # manifest codes path -> TokenFile
        elif path.is_dir():
            path = path / "manifest.jsonl"
        if rows is None and not path.is_file():
            raise VqtokError(f"{path}: no such manifest; run vqtok encode on a folder with -o DIR first")
        self.manifest = path
        self.add_bos, self.add_eos = add_bos, add_eos
        entries = [] if rows is None else [{"codes": key, "label": file.label} for key, file in rows.items()]
        for n, line in enumerate(path.read_text().splitlines() if rows is None else [], 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                entry["codes"]
            except (json.JSONDecodeError, KeyError, TypeError):
                raise VqtokError(f"{path}:{n}: not a manifest line (expected JSON with a 'codes' path)") from None
            entries.append(entry)
        rule_labels = [None] * len(entries)
        if split is not None:
            entries, rule_labels = _in_split(entries, split, rule)
        if max_items is not None:
            entries = entries[:max_items]
        if not entries:
            where = f" in the {split} split (rule {rule})" if split else ""
            raise VqtokError(f"{path}: the manifest lists no files{where}")
        self.entries: list[dict[str, Any]] = entries
        self.codes: list[list[torch.Tensor]] = []
        self.labels: list[int] = []
        self.sizes: list[int] = []
        self.tokenizer: dict[str, Any] | None = None
        accepted: set[str | None] = set()  # fingerprints found to make the first file's codes (checked once)
        for entry, rule_label in zip(entries, rule_labels):
            file = rows[entry["codes"]] if rows is not None else read_codes(path.parent / entry["codes"])
            made_by = file.meta["tokenizer"]
            self.tokenizer = self.tokenizer or made_by
            if made_by.get("fingerprint") not in accepted:
                if not same_codes(made_by, self.tokenizer):
                    raise VqtokError(f"{file.path}: made by {describe_tokenizer(made_by)}, but the first file of "
                                     f"{path} by {describe_tokenizer(self.tokenizer)}; one dataset, one tokenizer")
                accepted.add(made_by.get("fingerprint"))
            self.codes.append([torch.from_numpy(a) for a in file.levels])
            label = entry.get("label", file.label)
            label = rule_label if label is None and rule_label not in (None, -1) else label
            self.labels.append(-1 if label is None else int(label))
            size = file.size
            self.sizes.append(size if isinstance(size, int) else int(size[0]) * int(size[1]))
        self.vocab = [Vocab(k) for k in self.tokenizer["codebook_size"]]
        self.levels = len(self.vocab)
        self.dims = int(self.tokenizer.get("dims", 1))
        # multi-codebook (Q, T) codes are served in `layout` (data/layouts.py); flat ids need Q * K of them
        self.codebooks = int(self.tokenizer.get("codebooks", 1))
        self.layout = layout if self.codebooks > 1 else None
        if self.layout is not None:
            if layout not in layouts.LAYOUTS:
                raise VqtokError(f"unknown layout '{layout}'; choose one of {', '.join(layouts.LAYOUTS)}")
            held = {int(c[0].shape[0]) for c in self.codes}
            if layout == "flat":
                self.vocab = [Vocab(self.vocab[0].codebook_size * max(held))]
            if (add_bos or add_eos) and layout != "flat":
                raise VqtokError(f"add_bos / add_eos wrap flat sequences; layout '{layout}' keeps its codebook axis")
        if (add_bos or add_eos) and self.dims != 1:
            raise VqtokError("add_bos / add_eos apply to 1-D (audio) codes only")
        labelled = [x for x in self.labels if x >= 0]
        self.num_classes = max(labelled) + 1 if labelled else None

    def __len__(self) -> int:
        return len(self.codes)

    def load_tokenizer(self, device="cpu"):
        """The tokenizer that made these codes (to decode them): shipped (by fingerprint) or at its recorded path."""
        return load_tokenizer(locate_tokenizer(self.tokenizer, self.manifest), device)

    def __getitem__(self, index: int) -> dict[str, Any]:
        levels = []
        for codes, vocab in zip(self.codes[index], self.vocab):
            if self.layout is not None:
                k = int(self.tokenizer["codebook_size"][0])
                codes = layouts.apply(codes, self.layout, k, Vocab(k).pad)
            parts = ([torch.tensor([vocab.bos])] if self.add_bos else []) + [codes]
            parts += [torch.tensor([vocab.eos])] if self.add_eos else []
            levels.append(torch.cat(parts) if len(parts) > 1 else codes.clone())
        lengths = [c.shape[0] if c.dim() == 1 else tuple(c.shape) for c in levels]
        one = self.levels == 1
        return {"codes": levels[0] if one else levels, "length": lengths[0] if one else lengths,
                "label": self.labels[index], "index": index}

    def collate(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        """Pad a list of items with PAD: codes (B, T_max) or (B, H_max, W_max) per level, mask, lengths, labels."""
        per_level = [[it["codes"]] if self.levels == 1 else it["codes"] for it in items]
        out_codes, masks, lengths = [], [], []
        for lv, vocab in enumerate(self.vocab):
            seqs = [p[lv] for p in per_level]
            shape = [max(s.shape[a] for s in seqs) for a in range(seqs[0].dim())]
            batch = torch.full((len(seqs), *shape), vocab.pad, dtype=torch.long)
            mask = torch.zeros((len(seqs), *shape), dtype=torch.bool)
            for i, s in enumerate(seqs):
                index = (i,) + tuple(slice(0, n) for n in s.shape)
                batch[index] = s
                mask[index] = True
            out_codes.append(batch)
            masks.append(mask)
            lengths.append(torch.tensor([list(s.shape) if s.dim() > 1 else s.shape[0] for s in seqs]))
        one = self.levels == 1
        return {"codes": out_codes[0] if one else out_codes, "mask": masks[0] if one else masks,
                "lengths": lengths[0] if one else lengths,
                "labels": torch.tensor([it["label"] for it in items], dtype=torch.long),
                "index": torch.tensor([it["index"] for it in items], dtype=torch.long)}

    def __repr__(self) -> str:
        return (f"TokenDataset({str(self.manifest)!r}, {len(self)} items, levels={self.levels}, "
                f"vocab sizes {[v.size for v in self.vocab]}, tokenizer {self.tokenizer.get('fingerprint')})")


def _in_split(entries: list[dict[str, Any]], split: str, rule: str | None) -> tuple[list[dict[str, Any]], list[int]]:
    """The manifest lines that `rule` places in `split` by their codes path, and the rule's labels."""
    rule_fn = get_rule(rule)
    kept, labels = [], []
    for entry in entries:
        try:
            label, where = rule_fn(str(entry["codes"]))
        except ValueError as err:
            logger.warning("skipping %s: rule %r cannot place it (%s)", entry["codes"], rule, err)
            continue
        if where == split:
            kept.append(entry)
            labels.append(label)
    return kept, labels
