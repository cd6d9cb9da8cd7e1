"""The encode/decode contract every entry point shares: prepare an input, route it, encode; decode, postfilter,
undo the gain, resample, trim.

Encoding. `Codec.open(path)` reads and checks a file as the tokenizer's modality (modality.py) reads it: audio is
mixed to mono and resampled to the tokenizer's rate (read in pieces, data/stream.py) and brought to the tokenizer's
speech level `level_db` (speech_level.py), the gain recorded in the input's `source`; an image is read at its own
size with the tokenizer's channel count. `Codec.prepare(x)` does the same for an input already in memory.
`Codec.encode(items)` routes them: an audio file longer than one canonical block (`tok.block_frames` hops) is
encoded block by block as it is read (bounded memory; one pass to measure its level, a second to encode),
everything else `batch_size` at a time (`Tokenizer.encode_batch`). The codes are identical whichever route and
batch size is taken (streaming.py).

Decoding. `Codec.decode(levels, source)` is the inverse: audio decoded block-wise, trimmed to the recorded length
(through the tokenizer's postfilter unless asked not to), the recorded gain undone, then resampled to the rate
asked for ('model', 'original' restoring the file's rate and exact frame count, or a number of Hz); images at
their recorded size. `Codec.write(out, decoded)` writes the result (16-bit WAV, 8-bit PNG).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from vqtok.errors import VqtokError
from vqtok.modality import Decoded, Prepared, modality_of

__all__ = ["Codec", "Decoded", "Prepared"]


class Codec:
    """A tokenizer with the rules of turning inputs into codes and back (see the module doc).

    `at_level=False` encodes audio at its own level (no gain); `chunk_seconds` is how much of a long file is read
    and handed over at a time (None: all of it), never changing the codes; `batch_size` short inputs are encoded
    together; `progress` shows a bar while a long file is encoded.
    """

    def __init__(self, tok, at_level: bool = True, chunk_seconds: float | None = 10.0, batch_size: int = 1,
                 progress: bool = False, codebooks: int | None = None):
        stages = tok.codebooks
        if codebooks is not None and not 1 <= codebooks <= stages:
            raise VqtokError(f"codebooks {codebooks}: this tokenizer has {stages} codebook(s) per frame; choose 1.."
                             f"{stages}")
        self.tok = tok
        self.codebooks = None if codebooks in (None, stages) else codebooks  # a prefix of the residual stages
        self.modality = modality_of(tok.config)
        self.level_db = tok.level_db if at_level else None  # the speech level audio is brought to (None: as is)
        self.chunk_seconds = chunk_seconds or None
        self.batch_size = max(1, batch_size)
        self.progress = progress

    # ------------------------------------------------------------ encoding
    def open(self, path: Path) -> Prepared:
        """A file read and checked for this tokenizer; a VqtokError naming the file on any problem."""
        return self.modality.open(self, path)

    def prepare(self, x: np.ndarray | torch.Tensor) -> Prepared:
        """An input in memory: mono audio (T,) at the tokenizer's rate (brought to its level), an image (C, H, W)."""
        return self.modality.prepare(self, x)

    def encode(self, items: Sequence[Prepared]) -> list:
        """Codes per item (a tensor, or a list per level, top first), each exactly what it gives alone; of a
        multi-codebook tokenizer (Q, T), or (n, T) with `codebooks` n: the first n residual stages."""
        with torch.no_grad():
            codes = self.modality.encode(self, items)
        return codes if self.codebooks is None else [c[: self.codebooks] for c in codes]

    # ------------------------------------------------------------ decoding
    def decode(self, levels: Sequence[np.ndarray | torch.Tensor], source: dict[str, Any], sample_rate: str = "model",
               postfilter: bool = True) -> Decoded:
        """Codes per level (top first) back to the input `source` describes (a sidecar's record, or a `Prepared`'s).

        Audio: trimmed to `source["length"]`, its `gain_db` undone; `sample_rate` 'model', 'original' (the
        file's rate and exact frame count) or a number of Hz. Images: (C, H, W) at `source["size"]`, unclipped.
        """
        levels = [torch.as_tensor(c) for c in levels]
        codes = levels if self.tok.levels > 1 else levels[0]
        with torch.no_grad():
            return self.modality.decode(self, codes, source, sample_rate, postfilter)

    def round_trip(self, x: np.ndarray | torch.Tensor, postfilter: bool = True) -> tuple[list, Decoded]:
        """An input in memory (as `prepare` takes it) encoded and decoded back at its own level: (codes per level,
        top first; output)."""
        item = self.prepare(x)
        codes = self.encode([item])[0]
        levels = codes if isinstance(codes, list) else [codes]
        return levels, self.decode(levels, item.source, postfilter=postfilter)

    def write(self, out: Path, decoded: Decoded, what: Path | str = "") -> Path:
        """A decoded output to `out` in the modality's file format; `what` (the codes file) names it in warnings."""
        try:
            self.modality.write(out, decoded, what)
        except OSError as err:
            raise VqtokError(f"{out}: cannot write ({err.strerror or err})") from None
        return out

    def bar(self, **kwargs) -> tqdm:
        """A progress bar, shown only when this codec was asked for progress."""
        kwargs["disable"] = kwargs.get("disable", False) or not self.progress
        return tqdm(dynamic_ncols=True, **kwargs)
