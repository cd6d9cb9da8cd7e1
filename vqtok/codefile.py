"""Token files on disk, read without the models: format constants, sidecars, arrays and the checks that need no
tokenizer (vqtok/tokenizer/codes.py writes them, documents the format and adds the tokenizer's own checks)."""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vqtok.errors import VqtokError

# Level names by level count, top (coarse) first: token files, metrics, priors and the model card use them.
LEVEL_NAMES = {1: ["codes"], 2: ["top", "bottom"]}
FORMAT = "vqtok.codes"
FORMAT_VERSION = 1
CODE_SUFFIXES = (".npy", ".npz")


def sidecar_path(path: str | os.PathLike) -> Path:
    """``codes.npy`` -> ``codes.npy.json``."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def codes_suffix(levels: int) -> str:
    return ".npy" if levels == 1 else ".npz"


def code_dtype(codebook_size: int) -> np.dtype:
    """int16 when every id fits, else int32."""
    return np.dtype(np.int16) if codebook_size <= np.iinfo(np.int16).max + 1 else np.dtype(np.int32)


def describe_tokenizer(summary: dict[str, Any]) -> str:
    """'tokenizer 1a2b3c4d5e6f7a8b (vqvae, 512 codes, 8000 Hz)'."""
    rate = f", {summary['sample_rate']} Hz" if summary.get("sample_rate") else ""
    sizes = "+".join(str(k) for k in summary.get("codebook_size", []))
    name = f"{summary['name']}: " if summary.get("name") else ""
    return f"tokenizer {summary.get('fingerprint')} ({name}{summary.get('arch')}, {sizes} codes{rate})"


@dataclass
class CodeFile:
    """A codes file read back: per-level int64 arrays (top first) and the sidecar metadata."""

    path: Path
    levels: list[np.ndarray]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def source(self) -> dict[str, Any]:
        return self.meta.get("source", {})

    @property
    def label(self) -> int | None:
        return self.meta.get("label")

    @property
    def size(self) -> int | tuple[int, int]:
        """What decoding trims to: a length (audio: at the tokenizer's rate) or (H, W) (images)."""
        src = self.source
        return int(src["length"]) if "length" in src else tuple(src["size"])


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_sidecar(path: str | os.PathLike) -> dict[str, Any]:
    """The sidecar of codes file `path`, checked for format and version."""
    path = Path(path)
    side = sidecar_path(path)
    if not side.is_file():
        raise VqtokError(f"{path}: no sidecar {side.name} beside it; codes need it to be decoded safely "
                         "(copy it along, or re-encode with vqtok encode)")
    try:
        meta = json.loads(side.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise VqtokError(f"{side}: unreadable sidecar ({' '.join(str(err).split())})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise VqtokError(f"{side}: not a vqtok codes sidecar (format {meta.get('format') if isinstance(meta, dict) else None!r})")
    version = meta.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise VqtokError(f"{side}: codes format version {version} is newer than this vqtok supports "
                         f"({FORMAT_VERSION}); upgrade vqtok")
    for key in ("tokenizer", "levels", "source"):
        if key not in meta:
            raise VqtokError(f"{side}: sidecar lacks '{key}'")
    return meta


def load_arrays(path: Path, names: list[str]) -> list[np.ndarray]:
    """The arrays of a .npy / .npz, never unpickling anything."""
    if not path.is_file():
        raise VqtokError(f"{path}: no such codes file; check the path")
    if path.stat().st_size == 0:
        raise VqtokError(f"{path}: the codes file is empty (0 bytes)")
    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.ndarray):
            return [loaded]
        with loaded:
            found = sorted(loaded.files)
            if sorted(names) != found:
                raise VqtokError(f"{path}: holds levels {found}, expected {names}")
            return [loaded[n] for n in names]
    except VqtokError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        raise VqtokError(f"{path}: not a readable codes array ({' '.join(str(err).split())})") from None


def read_arrays(path: str | os.PathLike, check_maker: Callable[[dict[str, Any]], None] | None = None) -> CodeFile:
    """Read a codes file and check it against its sidecar (format, level names, dtype, shapes, id range, hash):
    int64 arrays, top first. `check_maker(tokenizer record)` runs once the sidecar is read, before the arrays
    (`read_codes` checks there that its tokenizer reads these codes). Every problem is a VqtokError naming the file.
    """
    path = Path(path)
    if path.suffix not in CODE_SUFFIXES:
        raise VqtokError(f"{path}: codes files end in .npy or .npz")
    if not path.is_file():
        raise VqtokError(f"{path}: no such codes file; check the path")
    meta = read_sidecar(path)
    made_by = meta["tokenizer"]
    if check_maker is not None:
        check_maker(made_by)
    n_levels = len(made_by.get("codebook_size", []))
    if n_levels not in LEVEL_NAMES or path.suffix != codes_suffix(n_levels):
        raise VqtokError(f"{path}: a {n_levels}-level code file must be {codes_suffix(n_levels) if n_levels in LEVEL_NAMES else '.npy/.npz'}")
    names = LEVEL_NAMES[n_levels]
    arrays = load_arrays(path, names)
    expected = {lv["name"]: lv for lv in meta["levels"]}
    levels = []
    for name, a, k in zip(names, arrays, made_by["codebook_size"]):
        if a.dtype.kind not in "iu":
            raise VqtokError(f"{path}: level '{name}' has dtype {a.dtype}; codes must be integers "
                             f"({code_dtype(k)} for a codebook of {k})")
        want = expected.get(name, {}).get("shape")
        if want is not None and list(a.shape) != list(want):
            raise VqtokError(f"{path}: level '{name}' has shape {list(a.shape)}, the sidecar says {want}")
        if a.size and (int(a.min()) < 0 or int(a.max()) >= k):
            raise VqtokError(f"{path}: level '{name}' holds ids {int(a.min())}..{int(a.max())}, outside the "
                             f"{k}-code codebook of {describe_tokenizer(made_by)}")
        levels.append(a.astype(np.int64))
    if meta.get("array_sha256") != file_sha256(path):
        raise VqtokError(f"{path}: the array does not match its sidecar (changed or replaced after encoding); "
                         "re-encode it")
    return CodeFile(path, levels, meta)
