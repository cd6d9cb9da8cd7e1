"""Codes as Parquet: one row per item in files of a few hundred MB that pyarrow, `datasets` and TokenDataset read.

Layout (format "vqtok.parquet", version 1), one row per encoded item::

    id        string               the item's path relative to the input root ("84/121123/84-121123-0000.flac")
    path      string               the input file as given at encode time
    kind      string               "audio" or "image"
    codes     list<list<int16>>    per level (top first), the level's array flattened in C order
                                   (int32 when a codebook has more than 32768 codes)
    shapes    list<list<int32>>    per level, the array's shape: (T,) audio, (Q, T) audio with Q codebooks,
                                   (H, W) images
    frames    list<int32>          per level, code frames along time (audio: shape[-1]; images: h * w)
    duration  double               seconds (audio; null for images)
    length    int64                samples at the tokenizer's rate that decoding trims to (audio; null for images)
    size      list<int32>          [H, W] (images; null for audio)
    label     int64                class index, or null
    source    string               the source record of a codes sidecar, as JSON (tokenizer/codes.py)

The file's key-value metadata holds, under ``vqtok``, JSON with the format and version, the vqtok version, the
tokenizer record of a codes sidecar (fingerprints, arch, codebook sizes, downsampling, sample rate, path, name),
the level names, the frame rate per level (audio) and the vocabulary (codebook size per level). Every file of a
dataset carries the same record, so any one file is self-describing. A list column of per-level lists keeps one
schema for one level, two levels (VQ-VAE-2) and levels of several codebooks (their shape says how many).

Files are written whole to a temporary name and renamed, so a reader never sees a half-written file.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from vqtok.codefile import LEVEL_NAMES, code_dtype, describe_tokenizer
from vqtok.errors import VqtokError

try:
    import pyarrow as pa
    import pyarrow.parquet as pq
except ImportError:
    raise VqtokError("Parquet files need pyarrow: pip install 'vqtok[parquet]'") from None
from vqtok.files import atomic_write
from vqtok.tokenizer.codes import TokenFile, same_codes
from vqtok.version import __version__

FORMAT = "vqtok.parquet"
FORMAT_VERSION = 1
META_KEY = b"vqtok"
SUFFIX = ".parquet"
TARGET_BYTES = 256 << 20  # a file is closed once its rows hold this much (codes and records, before compression)
ROW_GROUP = 1024  # rows per row group: what a streaming reader holds in memory at once


def schema(codes_type: pa.DataType, metadata: dict[str, Any] | None = None) -> pa.Schema:
    fields = [
        pa.field("id", pa.string(), nullable=False),
        pa.field("path", pa.string()),
        pa.field("kind", pa.string()),
        pa.field("codes", pa.list_(pa.list_(codes_type))),
        pa.field("shapes", pa.list_(pa.list_(pa.int32()))),
        pa.field("frames", pa.list_(pa.int32())),
        pa.field("duration", pa.float64()),
        pa.field("length", pa.int64()),
        pa.field("size", pa.list_(pa.int32())),
        pa.field("label", pa.int64()),
        pa.field("source", pa.string()),
    ]
    meta = None if metadata is None else {META_KEY: json.dumps(metadata, sort_keys=True).encode()}
    return pa.schema(fields, metadata=meta)


def dataset_metadata(tokenizer: dict[str, Any]) -> dict[str, Any]:
    """The file metadata for codes made by the tokenizer of sidecar record `tokenizer` (codes.tokenizer_summary
    plus its location)."""
    sizes = [int(k) for k in tokenizer["codebook_size"]]
    rate = tokenizer.get("sample_rate")
    frame_rate = [rate / d for d in tokenizer["downsample"]] if rate else None  # audio alone has a rate
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "vqtok_version": __version__,
            "tokenizer": tokenizer, "levels": LEVEL_NAMES[len(sizes)], "frame_rate": frame_rate,
            "vocabulary": {"codebook_size": sizes}}


def codes_type(tokenizer: dict[str, Any]) -> pa.DataType:
    return pa.from_numpy_dtype(code_dtype(max(int(k) for k in tokenizer["codebook_size"])))


def item_row(key: str, levels: Sequence[np.ndarray], source: dict[str, Any], label: int | None) -> dict[str, Any]:
    """One row: `levels` are the item's code arrays (top first), `source` its sidecar source record."""
    arrays = [np.ascontiguousarray(np.asarray(a)) for a in levels]
    audio = source.get("kind") == "audio"
    return {"id": key, "path": source.get("path"), "kind": source.get("kind"), "codes": arrays,
            "shapes": [list(a.shape) for a in arrays],
            "frames": [int(a.shape[-1]) if audio else int(a.size) for a in arrays],
            "duration": source.get("duration") if audio else None,
            "length": source.get("length") if audio else None,
            "size": None if audio else source.get("size"),
            "label": label, "source": json.dumps(source, sort_keys=True)}


def rows_table(rows: Sequence[dict[str, Any]], schema_: pa.Schema) -> pa.Table:
    """A table of `item_row`s; the codes go in as one flat buffer with offsets (no Python list per code)."""
    dtype = schema_.field("codes").type.value_type.value_type.to_pandas_dtype()
    flat = [a.reshape(-1) for r in rows for a in r["codes"]]  # every level of every row, in order
    inner = np.zeros(len(flat) + 1, np.int32)  # a file's codes stay far below 2**31
    np.cumsum([a.size for a in flat], out=inner[1:])
    outer = np.zeros(len(rows) + 1, np.int32)
    np.cumsum([len(r["codes"]) for r in rows], out=outer[1:])
    values = pa.array(np.concatenate(flat).astype(dtype) if flat else np.zeros(0, dtype))
    levels = pa.ListArray.from_arrays(pa.array(inner), values)
    codes = pa.ListArray.from_arrays(pa.array(outer), levels)
    columns = {name: [r[name] for r in rows] for name in schema_.names if name != "codes"}
    arrays = [codes if name == "codes" else pa.array(columns[name], type=schema_.field(name).type)
              for name in schema_.names]
    return pa.Table.from_arrays(arrays, schema=schema_)


class ParquetWriter:
    """Rows appended in order, written as `prefix-00000.parquet`, `prefix-00001.parquet`, ... in `folder`, each
    file closed once its rows reach `target_bytes`."""

    def __init__(self, folder: str | os.PathLike, tokenizer: dict[str, Any], prefix: str = "codes",
                 target_bytes: int = TARGET_BYTES):
        self.folder, self.prefix, self.target_bytes = Path(folder), prefix, target_bytes
        self.schema = schema(codes_type(tokenizer), dataset_metadata(tokenizer))
        self.rows: list[dict[str, Any]] = []
        self.pending_bytes = 0
        self.files: list[Path] = []
        self.folder.mkdir(parents=True, exist_ok=True)

    def add(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        self.pending_bytes += sum(a.nbytes for a in row["codes"]) + len(row["source"]) + 64
        if self.pending_bytes >= self.target_bytes:
            self._flush()

    def close(self) -> list[Path]:
        """Write what is pending; the files written, in order."""
        if self.rows or not self.files:
            self._flush()
        return self.files

    def _flush(self) -> None:
        table = rows_table(self.rows, self.schema)
        path = self.folder / f"{self.prefix}-{len(self.files):05d}{SUFFIX}"
        atomic_write(path, lambda tmp: pq.write_table(table, tmp, row_group_size=ROW_GROUP, compression="zstd"))
        self.files.append(path)
        self.rows, self.pending_bytes = [], 0


def parquet_files(path: str | os.PathLike) -> list[Path]:
    """A .parquet file, or the .parquet files of a folder (sorted, recursively)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob(f"*{SUFFIX}") if not p.name.startswith("."))
        if not files:
            raise VqtokError(f"{path}: no {SUFFIX} files in this folder")
        return files
    if not path.is_file():
        raise VqtokError(f"{path}: no such file or folder; check the path")
    return [path]


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The vqtok metadata of one Parquet file, checked for format and version."""
    path = Path(path)
    try:
        meta = pq.read_schema(path).metadata or {}
    except (pa.ArrowException, OSError) as err:
        raise VqtokError(f"{path}: not a readable Parquet file ({' '.join(str(err).split())})") from None
    try:
        record = json.loads(meta[META_KEY])
    except (KeyError, json.JSONDecodeError):
        raise VqtokError(f"{path}: a Parquet file without vqtok codes metadata; write it with vqtok encode "
                         "--format parquet") from None
    if record.get("format") != FORMAT:
        raise VqtokError(f"{path}: not a vqtok codes file (format {record.get('format')!r})")
    version = record.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise VqtokError(f"{path}: codes format version {version} is newer than this vqtok supports "
                         f"({FORMAT_VERSION}); upgrade vqtok")
    return record


class CodesParquet:
    """The rows of one or more vqtok Parquet files, all from one tokenizer (or ones that make the same codes).

    `paths`: a .parquet file, a folder of them, or a list of either. Rows come in file order, then row order,
    each as a TokenFile (what a codes .npy and its sidecar give): int64 arrays per level (top first), and a
    sidecar-like `meta` (tokenizer, levels, source, label) plus the row's `id` and other columns under `row`.
    """

    def __init__(self, paths: str | os.PathLike | Sequence[str | os.PathLike]):
        given = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
        self.files = [f for p in given for f in parquet_files(p)]
        self.meta = read_metadata(self.files[0])
        self.tokenizer: dict[str, Any] = self.meta["tokenizer"]
        for f in self.files[1:]:
            other = read_metadata(f)["tokenizer"]
            if not same_codes(other, self.tokenizer):
                raise VqtokError(f"{f}: made by {describe_tokenizer(other)}, but {self.files[0]} by "
                                 f"{describe_tokenizer(self.tokenizer)}; one dataset, one tokenizer")
        self.codebook_size = [int(k) for k in self.tokenizer["codebook_size"]]
        self._rows = None  # (file index, row index) by id, built on first lookup

    def ids(self) -> list[str]:
        """Every row's id, in order (reads only the id column)."""
        return [i for f in self.files for i in pq.read_table(f, columns=["id"]).column("id").to_pylist()]

    def __len__(self) -> int:
        return sum(pq.ParquetFile(f).metadata.num_rows for f in self.files)

    def __iter__(self) -> Iterator[TokenFile]:
        for f in self.files:
            yield from self._items(f, pq.read_table(f))

    def get(self, item_id: str) -> TokenFile:
        """The row with id `item_id`; a VqtokError naming the dataset when there is none."""
        for f in self.files:
            table = pq.read_table(f, filters=[("id", "=", item_id)])
            if table.num_rows:
                return next(self._items(f, table))
        raise VqtokError(f"{self.files[0] if len(self.files) == 1 else self.files[0].parent}: no item with id "
                         f"{item_id!r} (ids are input paths relative to the encoded folder)")

    def _items(self, path: Path, table: pa.Table) -> Iterator[TokenFile]:
        codes = table.column("codes").combine_chunks()
        shapes = table.column("shapes").to_pylist()
        others = table.drop_columns(["codes", "shapes"]).to_pylist()
        outer = codes.offsets.to_numpy()
        inner = codes.values.offsets.to_numpy()
        values = codes.values.values.to_numpy(zero_copy_only=False)
        for r, (row, shape) in enumerate(zip(others, shapes)):
            first, last = outer[r], outer[r + 1]
            if last - first != len(self.codebook_size) or len(shape) != len(self.codebook_size):
                raise VqtokError(f"{path}: item {row['id']!r} holds {last - first} level(s), the tokenizer has "
                                 f"{len(self.codebook_size)}")
            levels = []
            for lv, k in zip(range(first, last), self.codebook_size):
                a = values[inner[lv]:inner[lv + 1]]
                want = shape[lv - first]
                if a.size != math.prod(want):
                    raise VqtokError(f"{path}: item {row['id']!r} level {lv - first} holds {a.size} codes, its "
                                     f"shape {want} says {math.prod(want)}")
                if a.size and (int(a.min()) < 0 or int(a.max()) >= k):
                    raise VqtokError(f"{path}: item {row['id']!r} holds ids {int(a.min())}..{int(a.max())}, "
                                     f"outside the {k}-code codebook")
                levels.append(a.astype(np.int64).reshape(want))
            row["shapes"] = shape
            meta = {"tokenizer": self.tokenizer, "source": json.loads(row["source"]) if row["source"] else {},
                    "label": row["label"], "id": row["id"], "row": row,
                    "levels": [{"name": n, "shape": list(a.shape), "dtype": "int64"}
                               for n, a in zip(LEVEL_NAMES[len(levels)], levels)]}
            yield TokenFile(path, levels, meta)


def codes_by_path(path: str | os.PathLike) -> dict[str, TokenFile]:
    """Every row of a Parquet dataset keyed as a manifest of token files lists it: the id with the codes suffix
    (.npy, or .npz for two levels), so split rules on paths place each item as they place its token file."""
    data = CodesParquet(path)
    suffix = ".npy" if len(data.codebook_size) == 1 else ".npz"
    return {str(PurePosixPath(f.meta["id"]).with_suffix(suffix)): f for f in data}
