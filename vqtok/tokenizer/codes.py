"""Token files: codes as .npy/.npz plus a JSON sidecar holding what decoding needs, checked on read.

Layout (format "vqtok.codes", version 1):

* A single-level tokenizer writes ``NAME.npy``: int16 when the codebook has at most 32768 codes,
  else int32; shape ``(T,)`` for audio, ``(H, W)`` for images, ``(n, T)`` for the first n codebooks of a
  multi-codebook (residual) tokenizer, whose summary records its ``codebooks`` Q (n <= Q). A VQ-VAE-2 writes ``NAME.npz`` with one
  array per level, ``top`` and ``bottom`` (same dtype rule, per level). Arrays are plain numeric
  NumPy files: they are always read with ``allow_pickle=False``.
* Beside it, ``NAME.npy.json`` (or ``NAME.npz.json``), the sidecar::

      {"format": "vqtok.codes", "format_version": 1, "vqtok_version": "0.1.0",
       "tokenizer": {"fingerprint": "...", "codes_fingerprint": "...", "arch": "vqvae", "dims": 1, "sample_rate": 8000,
                     "codebook_size": [512], "downsample": [40], "hop": 40, "block_frames": 200,
                     "path": "/abs/runs/speech/tokenizer.safetensors", "name": null},
       "levels": [{"name": "codes", "shape": [200], "dtype": "int16"}],
       "source": {"kind": "audio", "path": "a.wav", "length": 8000, "sample_rate": 8000,
                  "orig_sample_rate": 44100, "channels": 2, "orig_frames": 44100, "duration": 1.0},
       "label": 3,
       "array_sha256": "..."}

  ``source.length`` is the signal length at the tokenizer's rate (images: ``size`` [H, W]) that decoding
  trims to; ``orig_*`` restore the original rate and length. ``array_sha256`` hashes the array file,
  so an array and a sidecar from different writes never pass as a pair. ``tokenizer.path`` (absolute, at
  encode time) and ``tokenizer.name`` (a shipped model's name) let decoding find the tokenizer without
  being told: ``TokenFile.load_tokenizer()`` (and ``vqtok decode`` without -m) takes the shipped tokenizer
  with the recorded fingerprint, else the file at the recorded path if it still has that fingerprint.
  A later version with the same codes (a decoder-only update: same ``codes_fingerprint``, or a shipped file
  whose ``same_codes_as`` lists the fingerprint) is taken in its place and accepted by ``read_codes``.

Both files are written atomically (temporary file + rename), the array first, so the sidecar's
presence with a matching hash means the pair is complete: an interrupted folder run resumes from it.
``read_codes(path, tokenizer)`` refuses a missing or mismatched sidecar, a different tokenizer
(fingerprint), a non-integer dtype, wrong level names or shapes, and ids outside a level's codebook,
each with a one-line VqtokError naming the file (and both tokenizers where relevant).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from vqtok.codefile import (CODE_SUFFIXES, FORMAT, FORMAT_VERSION, LEVEL_NAMES, CodeFile, code_dtype,  # noqa: F401
                            codes_suffix, describe_tokenizer, read_arrays, read_sidecar, sidecar_path)
from vqtok.codefile import file_sha256 as _file_sha256
from vqtok.errors import VqtokError
from vqtok.files import atomic_write
from vqtok import registry
from vqtok.tokenizer.checkpoint import load_tokenizer, locate_tokenizer, reads_codes_of
from vqtok.version import __version__

def tokenizer_summary(tok) -> dict[str, Any]:
    """What a codes file records about the tokenizer that made it."""
    summary = {
        "fingerprint": tok.fingerprint,
        "codes_fingerprint": tok.codes_fingerprint,
        "arch": tok.config.arch,
        "dims": tok.dims,
        "sample_rate": tok.sample_rate,
        "codebook_size": list(tok.codebook_size),
        "downsample": list(tok.downsample),
        "hop": tok.hop,
    }
    if tok.sample_rate is not None:  # audio: decoded in blocks of this many hops
        summary["block_frames"] = tok.block_frames
    if tok.codebooks > 1:  # residual stages per frame; a file may hold a prefix of them
        summary["codebooks"] = tok.codebooks
    return summary


def same_codes(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Two sidecar records of tokenizers that make the same codes: one fingerprint, one codes fingerprint, or
    two versions of one shipped tokenizer (records older than codes fingerprints: its `same_codes_as`)."""
    codes = a.get("codes_fingerprint")
    if a.get("fingerprint") == b.get("fingerprint") or (codes is not None and codes == b.get("codes_fingerprint")):
        return True
    first, second = (registry.by_fingerprint(r.get("fingerprint"), r.get("codes_fingerprint")) for r in (a, b))
    return first is not None and second is not None and first.path == second.path


def tokenizer_location(tok) -> dict[str, Any]:
    """Where a loaded tokenizer came from (absolute path; shipped name or None): what decoding looks up."""
    path = getattr(tok, "path", None)
    return {"path": str(path) if path else None, "name": getattr(tok, "name", None)}


def write_codes(path: str | os.PathLike, codes, tok, source: dict[str, Any],
                label: int | None = None) -> dict[str, Any]:
    """Write codes (a tensor/array, or a list per level, top first) and their sidecar; returns the sidecar's
    content as written (`sidecar_path(path)` is where it went).

    `source` describes the input (see the module doc): for audio at least ``kind="audio"`` and
    ``length``; for images ``kind="image"`` and ``size``.
    """
    path = Path(path)
    levels = [codes] if not isinstance(codes, (list, tuple)) else list(codes)
    if len(levels) != tok.levels:
        raise VqtokError(f"{path}: got codes for {len(levels)} level(s), the tokenizer has {tok.levels}")
    if path.suffix != codes_suffix(tok.levels):
        raise VqtokError(f"{path}: a {tok.levels}-level tokenizer writes {codes_suffix(tok.levels)} files, "
                         f"not {path.suffix or 'no suffix'}")
    if tok.fingerprint is None:
        raise VqtokError("the tokenizer has no fingerprint: save it with save_tokenizer or load it with "
                         "load_tokenizer before writing codes")
    names = LEVEL_NAMES[tok.levels]
    arrays = []
    for name, c, k in zip(names, levels, tok.codebook_size):
        a = np.asarray(c.detach().cpu() if hasattr(c, "detach") else c)
        if a.dtype.kind not in "iu":
            raise VqtokError(f"{path}: level '{name}' has dtype {a.dtype}; codes must be integers")
        if a.size and (int(a.min()) < 0 or int(a.max()) >= k):
            raise VqtokError(f"{path}: level '{name}' holds ids {int(a.min())}..{int(a.max())}, outside the "
                             f"{k}-code codebook")
        arrays.append(np.ascontiguousarray(a.astype(code_dtype(k))))
    check_shapes(TokenFile(path, arrays, {"source": source}), tok)
    if tok.levels == 1:
        atomic_write(path, lambda tmp: _save_npy(tmp, arrays[0]))
    else:
        atomic_write(path, lambda tmp: _save_npz(tmp, dict(zip(names, arrays))))
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "vqtok_version": __version__,
        "tokenizer": {**tokenizer_summary(tok), **tokenizer_location(tok)},
        "levels": [{"name": n, "shape": list(a.shape), "dtype": str(a.dtype)} for n, a in zip(names, arrays)],
        "source": source,
        "label": label,
        "array_sha256": _file_sha256(path),
    }
    side = sidecar_path(path)
    text = json.dumps(meta, indent=1, sort_keys=True)
    atomic_write(side, lambda tmp: Path(tmp).write_text(text))
    return json.loads(text)  # as read back: tuples in `source` become lists


def _save_npy(tmp: str, array: np.ndarray) -> None:
    with open(tmp, "wb") as f:  # a file object: np.save would append .npy to a bare name
        np.save(f, array, allow_pickle=False)


def _save_npz(tmp: str, arrays: dict[str, np.ndarray]) -> None:
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)


class TokenFile(CodeFile):
    """A codes file read back (`read_codes`): per-level int64 arrays (top first), the sidecar, and its tokenizer."""

    def load_tokenizer(self, device="cpu"):
        """The tokenizer that made these codes: shipped (by fingerprint) or at its recorded path."""
        return load_tokenizer(locate_tokenizer(self.meta.get("tokenizer", {}), self.path), device)


def read_codes(path: str | os.PathLike, tok=None) -> TokenFile:
    """Read and check a codes file; with `tok` (a tokenizer, a file or a shipped name), also check that it can
    decode these codes. Without one, `TokenFile.load_tokenizer()` finds the tokenizer that made them.

    Returns int64 arrays, top first. Every problem is a VqtokError naming the file.
    """
    path = Path(path)
    if isinstance(tok, (str, os.PathLike)):
        tok = load_tokenizer(tok)

    def check_maker(made_by: dict[str, Any]) -> None:
        if tok is not None and not reads_codes_of(tok, made_by):
            raise VqtokError(f"{path}: made by {describe_tokenizer(made_by)}, but decoding with "
                             f"{describe_tokenizer(tokenizer_summary(tok))}; pass the tokenizer that encoded it")

    arrays = read_arrays(path, check_maker)
    file = TokenFile(arrays.path, arrays.levels, arrays.meta)
    if tok is not None:
        check_shapes(file, tok)
    return file


def check_shapes(file: TokenFile, tok) -> None:
    """The level shapes must be what `tok` gives for the recorded input size."""
    src = file.source
    size = src.get("length", src.get("size"))  # a waveform's samples, an image's (H, W): what the source records
    if size is None:
        raise VqtokError(f"{file.path}: the sidecar records no input size")
    try:
        expected = tok.code_shape(size)
    except (TypeError, ValueError):
        raise VqtokError(f"{file.path}: the sidecar's input size {size} does not fit this tokenizer") from None
    got = [tuple(a.shape) for a in file.levels]
    if tok.codebooks > 1 and len(got[0]) == 2 and 1 <= got[0][0] <= tok.codebooks:
        expected = [(got[0][0], *expected[0][1:])]  # any prefix of the residual stages decodes
    if got != expected:
        raise VqtokError(f"{file.path}: level shapes {got} do not fit an input of size {size} for this tokenizer "
                         f"(expected {expected})")


def is_complete(path: str | os.PathLike, fingerprint: str | None) -> bool:
    """True when `path` and its sidecar exist, match each other and come from tokenizer `fingerprint`."""
    path = Path(path)
    try:
        meta = read_sidecar(path)
        return (path.is_file() and meta["tokenizer"].get("fingerprint") == fingerprint
                and meta.get("array_sha256") == _file_sha256(path))
    except (VqtokError, OSError):
        return False
