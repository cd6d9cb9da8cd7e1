"""Prior-coded token files (.vqz): token files' codes range-coded under a prior's next-code distributions.

A .vqz file holds one token file, or a folder's token files (an archive) coded as one message, so the end of
the message (~2.6 bits) and the header are paid once. File layout (format version 3), little-endian::

    magic b"VQTZ" | format version u16 | header length u32 | header | CRC32 of all before u32 | payload

The header is binary: the prior's and the tokenizer's fingerprints (8 raw bytes each), the number of levels,
the batch size the entries were coded in (it fixes the order of the codes in the message), the number of
entries, the payload's length and CRC32 (u32 each), every level's codebook size (u32, top first); then one
byte saying whether the rest is zlib-compressed (1) or not (0), and the rest: per entry its label and the
class it was coded under (i16, -1: none) and per level its rank (u8) and shape (u32 each), followed by an
optional compact JSON record (empty when there is nothing to say): `prior_path`, where the prior was (a hint
for `vqtok decompress`), and `entries`, per entry its `name` (the path inside the compressed folder, for an
archive) and `source` (the token file's source record, what its sidecar needs back).

The payload is one range-coded message (`vqtok.prior.arithmetic`). Entries of equal shapes go through the prior
`batch` at a time (`_batches`); inside a batch every level in turn (top first), every step in raster order (residual
codebooks: frame by frame; for a sequence with EOS, its end as well), and at each step every entry of the batch,
each code under the frequency table of the prior's logits for it at that step. Encoder and decoder compute those
logits through the same incremental path as the sampler (`PixelCNNSteps`, `TransformerSteps`), fp32 on the CPU, one
thread, no autocast, and with oneDNN and NNPACK off: PyTorch's native convolution runs each map of a batch through
its own GEMM, so a PixelCNN gives every map bit-identical logits whether it is coded alone or in a batch. A file
decodes on the machine and torch build that wrote it (another CPU or library may round a logit differently).
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath

import numpy as np
import torch

from vqtok.errors import VqtokError
from vqtok.prior.arithmetic import RangeDecoder, RangeEncoder, frequencies
from vqtok.prior.model import CodePrior
from vqtok.tokenizer.base import LEVEL_NAMES
from vqtok.tokenizer.checkpoint import fingerprint
from vqtok.tokenizer.codes import codes_suffix

MAGIC = b"VQTZ"
FORMAT_VERSION = 3  # 3: range coder, any number of entries in one message (2: one file per message; 1: JSON)
SUFFIX = ".vqz"
_PREFIX = struct.Struct("<4sHI")  # magic, format version, header length
_CRC = struct.Struct("<I")
_FIXED = struct.Struct("<8s8sBHIII")  # prior and tokenizer fingerprints, levels, batch, entries, payload length, CRC32
_U32 = struct.Struct("<I")  # a codebook size, a dimension
_ENTRY = struct.Struct("<hh")  # label, coded class
_RANK = struct.Struct("<B")
_NONE = -1  # label / coded class absent


@dataclass
class VqzEntry:
    """One token file in a .vqz: its shape per level (top first) and what its sidecar holds."""

    shapes: list[list[int]]
    label: int | None  # the token file's label, restored in its sidecar
    coded_class: int | None  # class the codes were coded under (num_classes: the null class); None: no classes
    source: dict = field(default_factory=dict)  # the token file's source record; {} when not kept
    name: str | None = None  # an archive's entries: the path inside the folder that was compressed

    @property
    def num_codes(self) -> int:
        return sum(math.prod(shape) for shape in self.shapes)


@dataclass
class VqzHeader:
    """What a .vqz file says about its payload (stored in binary; see the module doc)."""

    prior: str  # prior_fingerprint of the prior(s) that coded it
    tokenizer: str  # fingerprint of the tokenizer that made the codes
    codebook_sizes: list[int]  # per level, top first
    entries: list[VqzEntry]
    payload_bytes: int
    payload_crc32: int
    batch: int = 1  # entries of equal shapes coded together: fixes the order of the codes in the payload
    prior_path: str | None = None  # where the prior was at compression (vqtok decompress looks there by default)

    @property
    def level_names(self) -> list[str]:
        return list(LEVEL_NAMES[len(self.codebook_sizes)])

    @property
    def is_archive(self) -> bool:
        """Written from a folder: the entries carry their names and decompress into a folder."""
        return any(entry.name is not None for entry in self.entries)

    @property
    def num_codes(self) -> int:
        return sum(entry.num_codes for entry in self.entries)

    @property
    def raw_bits(self) -> int:
        """The codes at ceil(log2 K) bits each: what the payload is compared with."""
        bits = [max(1, math.ceil(math.log2(k))) for k in self.codebook_sizes]
        return sum(math.prod(shape) * b for entry in self.entries for shape, b in zip(entry.shapes, bits))


@dataclass
class Vqz:
    """A .vqz file read back and checked: its header, payload, and the size of everything but the payload."""

    header: VqzHeader
    payload: bytes
    overhead_bytes: int


# --------------------------------------------------------------------------- the prior's side
def prior_fingerprint(priors: list[CodePrior]) -> str:
    """sha256 over every level's network config, layout and weights (top first): identifies the coding model."""
    h = hashlib.sha256()
    for prior in priors:
        described = json.dumps({"config": prior.config, "layout": prior.layout.identity()}, sort_keys=True)
        tensors = {k: v.detach().cpu() for k, v in prior.state_dict().items()}
        h.update(fingerprint(described, tensors).encode())
    return h.hexdigest()[:16]


@dataclass
class CodedItem:
    """One token file to compress: its codes per level (top first) and what its sidecar holds."""

    levels: list[np.ndarray]
    label: int | None
    coded_class: int | None  # from `coded_class`
    source: dict
    name: str | None = None  # in an archive: its path inside the compressed folder (POSIX, relative)


@contextmanager
def _deterministic() -> Iterator[None]:
    """One CPU thread, no autograd and PyTorch's native convolution while coding: the logits depend on the
    inputs alone, and on neither the thread count nor how many maps share a batch (oneDNN's convolution picks
    its kernel by batch size, and NNPACK takes over from 16 maps on, either of which changes the last bits of
    a logit)."""
    threads, onednn = torch.get_num_threads(), torch.backends.mkldnn.enabled
    torch.set_num_threads(1)
    torch.backends.mkldnn.enabled = False  # not mkldnn.flags(): it also sets TF32 and warns about it
    try:
        with torch.no_grad(), torch.backends.nnpack.flags(enabled=False):
            yield
    finally:
        torch.set_num_threads(threads)
        torch.backends.mkldnn.enabled = onednn


def batchable(priors: list[CodePrior]) -> bool:
    """Whether items may share a batch bit-exactly: when every level's network says so (`batchable`: a
    PixelCNN's maps do; a Transformer's linear layers go through a BLAS GEMM whose rounding depends on the number of
    rows, so its items are coded one at a time)."""
    return all(p.net.batchable for p in priors)


def _code(priors: list[CodePrior], shapes: list[tuple[int, ...]], classes: list[int | None],
          choose: Callable[[int, int, int, np.ndarray], int]) -> list[list[np.ndarray]]:
    """Walk every level's steps (top first) for b items of the same shapes at once (b > 1: `batchable` priors
    only); choose(item, level, step, freqs) gives the symbol at each step (the encoder returns the known code,
    the decoder reads it from that item's payload). Returns each item's codes per level, checked."""
    b = len(classes)
    if b > 1 and not batchable(priors):
        raise ValueError("only PixelCNN priors code several items in one batch bit-exactly")
    check_fit(priors, shapes, "a token file")
    levels: list[np.ndarray] = []  # per level (b, *shape)
    with _deterministic():
        for index, (prior, shape) in enumerate(zip(priors, shapes)):
            net, lay = prior.net.float().cpu().eval(), prior.layout
            labels = torch.tensor(classes) if lay.num_classes else None
            top = torch.from_numpy(levels[0]) if lay.level == "bottom" else None  # (b, ...) known upper codes
            count = lay.symbol_count(shape)  # a sequence with EOS codes its end too
            steps = lay.coding_steps(net, b, shape, labels, top)
            symbols = np.zeros((b, count), dtype=np.int64)
            for t in range(count):
                logits = steps.next_logits()  # (b, K)
                for i in range(b):
                    symbols[i, t] = choose(i, index, t, frequencies(logits[i]))
                steps.push(torch.from_numpy(symbols[:, t].copy()))
            levels.append(lay.from_symbols(symbols, shape))  # (b, *shape)
    return [[level[i] for level in levels] for i in range(b)]


def coded_class(priors: list[CodePrior], label: int | None, name: str) -> int | None:
    """The class to code under: the label, or for a class-conditional prior without one, its null class."""
    lay = priors[0].layout
    if not lay.num_classes:
        return None
    if label is None:
        if not lay.null_class:
            raise VqtokError(f"{name} has no label and the prior is class-conditional without a null class: "
                             "pass --label N")
        return lay.num_classes
    if not 0 <= label < lay.num_classes:
        raise VqtokError(f"{name}: label {label} is outside the prior's classes 0..{lay.num_classes - 1}")
    return label


def _batches(shapes: list[tuple], priors: list[CodePrior], batch: int) -> list[list[int]]:
    """Item indices grouped into batches of at most `batch` items with equal shapes (singletons if the priors
    are not `batchable`), in first-seen order."""
    if not batchable(priors):
        batch = 1
    groups: dict[tuple, list[int]] = {}
    for i, shape in enumerate(shapes):
        groups.setdefault(shape, []).append(i)
    return [group[j : j + batch] for group in groups.values() for j in range(0, len(group), batch)]


def _encode(priors: list[CodePrior], items: list[CodedItem], encoders: list[RangeEncoder], batch: int) -> None:
    """Feed every item's codes to its encoder (items may share one) in the stream order of `batch`."""
    for group in _batches([tuple(c.shape for c in item.levels) for item in items], priors, batch):
        symbols = [[p.layout.symbols(codes) for p, codes in zip(priors, items[i].levels)] for i in group]

        def choose(j: int, level: int, t: int, freqs: np.ndarray) -> int:
            encoders[group[j]].encode(int(symbols[j][level][t]), freqs)
            return int(symbols[j][level][t])

        _code(priors, [tuple(c.shape) for c in items[group[0]].levels], [items[i].coded_class for i in group],
              choose)


def _decode(priors: list[CodePrior], entries: list[VqzEntry], decoders: list[RangeDecoder],
            batch: int) -> list[list[np.ndarray]]:
    """Read every entry's codes per level (top first) from its decoder (entries may share one), in `_encode`'s order."""
    out: list[list[np.ndarray]] = [[] for _ in entries]
    shapes = [tuple(tuple(s) for s in entry.shapes) for entry in entries]
    for group in _batches(shapes, priors, batch):
        decoded = _code(priors, list(shapes[group[0]]), [entries[i].coded_class for i in group],
                        lambda j, level, t, freqs: decoders[group[j]].decode(freqs))
        for i, levels in zip(group, decoded):
            out[i] = levels
    return out


def decode_files(priors: list[CodePrior], vqzs: list[Vqz], batch: int = 32) -> list[list[list[np.ndarray]]]:
    """Checked .vqz files -> per file, per entry, the codes per level (top first). Single-entry files of
    equal shapes share batches through the prior; an archive decodes in the batches it was coded in."""
    out: list[list[list[np.ndarray]]] = [[] for _ in vqzs]
    singles = [i for i, v in enumerate(vqzs) if len(v.header.entries) == 1]
    decoded = _decode(priors, [vqzs[i].header.entries[0] for i in singles],
                      [RangeDecoder(vqzs[i].payload) for i in singles], batch)
    for i, levels in zip(singles, decoded):
        out[i] = [levels]
    for i, vqz in enumerate(vqzs):
        if len(vqz.header.entries) > 1:
            decoder = RangeDecoder(vqz.payload)
            out[i] = _decode(priors, vqz.header.entries, [decoder] * len(vqz.header.entries), vqz.header.batch)
    return out


# --------------------------------------------------------------------------- the file
def _fingerprint_bytes(text: str, what: str) -> bytes:
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raw = b""
    if len(raw) != 8:
        raise ValueError(f"the {what} fingerprint {text!r} is not 16 hex digits")
    return raw


def _optional(value: int | None) -> int:
    return _NONE if value is None else value


def pack(header: VqzHeader, payload: bytes) -> bytes:
    """Header and payload -> the bytes of a .vqz file."""
    fixed = _FIXED.pack(_fingerprint_bytes(header.prior, "prior"), _fingerprint_bytes(header.tokenizer, "tokenizer"),
                        len(header.codebook_sizes), header.batch, len(header.entries), header.payload_bytes,
                        header.payload_crc32)
    table = []
    for entry in header.entries:
        table.append(_ENTRY.pack(_optional(entry.label), _optional(entry.coded_class)))
        for shape in entry.shapes:
            table.append(_RANK.pack(len(shape)) + b"".join(_U32.pack(d) for d in shape))
    records = [{k: v for k, v in (("name", e.name), ("source", e.source)) if v} for e in header.entries]
    extra = {k: v for k, v in (("prior_path", header.prior_path), ("entries", records if any(records) else None)) if v}
    if extra:
        table.append(json.dumps(extra, sort_keys=True, separators=(",", ":")).encode())
    rest = b"".join(table)
    packed = zlib.compress(rest, 9)
    rest = b"\x01" + packed if len(packed) < len(rest) else b"\x00" + rest
    body = fixed + b"".join(_U32.pack(k) for k in header.codebook_sizes) + rest
    head = _PREFIX.pack(MAGIC, FORMAT_VERSION, len(body)) + body
    return head + _CRC.pack(zlib.crc32(head)) + payload


def _entry_name(name: object, levels: int) -> str:
    """An archive entry's name, checked: a relative path inside the output folder, ending in the codes suffix."""
    path = PurePosixPath(name) if isinstance(name, str) else None
    if path is None or path.is_absolute() or ".." in path.parts or "\\" in str(path) or path.suffix != codes_suffix(levels):
        raise ValueError(f"entry name {name!r} is not a relative {codes_suffix(levels)} path")
    return str(path)


def _parse_header(body: bytes) -> VqzHeader:
    """The binary header (its CRC already checked) -> VqzHeader; struct.error or ValueError if malformed."""
    prior, tok, levels, batch, count, payload_bytes, payload_crc = _FIXED.unpack_from(body)
    if levels not in LEVEL_NAMES or not count or not batch:
        raise ValueError(f"{levels} levels, {count} entries, batch {batch}")
    at = _FIXED.size + levels * _U32.size
    sizes = [_U32.unpack_from(body, _FIXED.size + _U32.size * i)[0] for i in range(levels)]
    rest = body[at + 1 :]
    if body[at] == 1:
        rest = zlib.decompress(rest)
    elif body[at] != 0:
        raise ValueError(f"unknown packing {body[at]}")
    at, entries = 0, []
    for _ in range(count):
        label, coded = _ENTRY.unpack_from(rest, at)
        at += _ENTRY.size
        shapes = []
        for _ in range(levels):
            (rank,) = _RANK.unpack_from(rest, at)
            shapes.append([_U32.unpack_from(rest, at + _RANK.size + _U32.size * d)[0] for d in range(rank)])
            at += _RANK.size + _U32.size * rank
        entries.append(VqzEntry(shapes, None if label == _NONE else label, None if coded == _NONE else coded))
    extra = json.loads(rest[at:]) if at < len(rest) else {}
    records = extra.get("entries") or [{}] * count
    if len(records) != count:
        raise ValueError(f"{len(records)} entry records for {count} entries")
    for entry, record in zip(entries, records):
        entry.source = dict(record.get("source", {}))
        entry.name = _entry_name(record["name"], levels) if "name" in record else None
    named = {e.name for e in entries if e.name is not None}
    if (named or count > 1) and len(named) < count:  # an archive names every entry, each once
        raise ValueError(f"{count} entries, {len(named)} distinct names")
    return VqzHeader(prior=prior.hex(), tokenizer=tok.hex(), codebook_sizes=sizes, entries=entries,
                     payload_bytes=payload_bytes, payload_crc32=payload_crc, batch=batch,
                     prior_path=extra.get("prior_path"))


def unpack(data: bytes, name: str) -> Vqz:
    """The bytes of a .vqz file -> header and payload, every check a one-line VqtokError naming `name`."""
    if not data:
        raise VqtokError(f"{name}: empty file; not a .vqz file (vqtok compress writes them)")
    if data[: len(MAGIC)] != MAGIC[: len(data)]:
        raise VqtokError(f"{name}: not a .vqz file (it does not start with {MAGIC!r})")
    if len(data) < _PREFIX.size:
        raise VqtokError(f"{name}: truncated ({len(data)} bytes, shorter than the header)")
    _, version, length = _PREFIX.unpack_from(data)
    if version > FORMAT_VERSION:
        raise VqtokError(f"{name}: format version {version} is newer than this vqtok reads (up to "
                         f"{FORMAT_VERSION}); update vqtok")
    end = _PREFIX.size + length
    if len(data) < end + _CRC.size:
        raise VqtokError(f"{name}: truncated ({len(data)} bytes; the header alone needs {end + _CRC.size})")
    if _CRC.unpack_from(data, end)[0] != zlib.crc32(data[:end]):
        raise VqtokError(f"{name}: the header is corrupted (CRC32 mismatch)")
    if version < FORMAT_VERSION:
        raise VqtokError(f"{name}: format version {version} is older than this vqtok reads ({FORMAT_VERSION}); "
                         "compress the token file again")
    try:
        header = _parse_header(data[_PREFIX.size : end])
    except (struct.error, ValueError, TypeError, KeyError, AttributeError, IndexError, zlib.error) as err:
        raise VqtokError(f"{name}: unreadable header ({err})") from None
    payload = data[end + _CRC.size :]
    if len(payload) < header.payload_bytes:
        raise VqtokError(f"{name}: truncated (payload of {len(payload)} bytes, the header says "
                         f"{header.payload_bytes})")
    if len(payload) > header.payload_bytes:
        raise VqtokError(f"{name}: {len(payload) - header.payload_bytes} bytes after the payload (corrupted file)")
    if zlib.crc32(payload) != header.payload_crc32:
        raise VqtokError(f"{name}: the payload is corrupted (CRC32 mismatch)")
    return Vqz(header, payload, end + _CRC.size)


def read_vqz(path: str | Path) -> Vqz:
    """Read and check a .vqz file (not yet against a prior: see `check_prior`)."""
    path = Path(path)
    if not path.is_file():
        raise VqtokError(f"{path}: no such file")
    return unpack(path.read_bytes(), str(path))


def check_fit(priors: list[CodePrior], shapes: list[tuple[int, ...]], name: str) -> None:
    """Refuse codes of another shape than the priors read: a level of Q residual codebooks must hold all Q."""
    for prior, shape in zip(priors, shapes):
        prior.layout.check_fit(shape, name)


def check_prior(vqz: Vqz, priors: list[CodePrior], name: str) -> None:
    """Refuse priors other than the ones that coded the file, naming both fingerprints."""
    have = prior_fingerprint(priors)
    if vqz.header.prior != have:
        raise VqtokError(f"{name}: coded with prior {vqz.header.prior}, but the prior given is {have}; "
                         "decompress with the prior that compressed it")


def _header(priors: list[CodePrior], tok_fingerprint: str, items: list[CodedItem], payload: bytes, batch: int,
            prior_path: str | None) -> VqzHeader:
    return VqzHeader(
        prior=prior_fingerprint(priors), tokenizer=tok_fingerprint,
        codebook_sizes=[p.layout.codebook_size for p in priors],
        entries=[VqzEntry([list(c.shape) for c in item.levels], item.label, item.coded_class, item.source, item.name)
                 for item in items],
        payload_bytes=len(payload), payload_crc32=zlib.crc32(payload), batch=batch, prior_path=prior_path)


def compress_many(priors: list[CodePrior], tok_fingerprint: str, items: list[CodedItem],
                  prior_path: str | None = None, batch: int = 32) -> list[bytes]:
    """Token files -> the bytes of one .vqz file each (each the same as `compress` gives for it alone; a
    PixelCNN prior codes items of equal shapes `batch` at a time). Names are for archives: not kept."""
    items = [replace(item, name=None) for item in items]
    encoders = [RangeEncoder() for _ in items]
    _encode(priors, items, encoders, batch)
    return [pack(_header(priors, tok_fingerprint, [item], payload, 1, prior_path), payload)
            for item, payload in ((item, encoder.finish()) for item, encoder in zip(items, encoders))]


def compress_archive(priors: list[CodePrior], tok_fingerprint: str, items: list[CodedItem],
                     prior_path: str | None = None, batch: int = 32) -> bytes:
    """Token files (named: their paths inside a folder) -> the bytes of one .vqz archive, all their codes one
    range-coded message: the message's end and the header are paid once, not per file."""
    if not items or any(item.name is None for item in items):
        raise ValueError("an archive needs at least one item, and every item needs a name")
    batch = batch if batchable(priors) else 1
    encoder = RangeEncoder()
    _encode(priors, items, [encoder] * len(items), batch)
    payload = encoder.finish()
    return pack(_header(priors, tok_fingerprint, items, payload, batch, prior_path), payload)


def compress(priors: list[CodePrior], tok_fingerprint: str, levels: list[np.ndarray], label: int | None,
             coded: int | None, source: dict, prior_path: str | None = None) -> bytes:
    """Codes per level (top first) and what their sidecar holds -> the bytes of a .vqz file."""
    return compress_many(priors, tok_fingerprint, [CodedItem(levels, label, coded, source)], prior_path)[0]


# --------------------------------------------------------------------------- vqtok info
def vqz_summary(vqz: Vqz) -> dict:
    """What `vqtok info X.vqz` shows: levels, entries, sizes, bits per code and the ratio to the raw codes."""
    head = vqz.header
    payload_bits = 8 * head.payload_bytes
    total_bits = 8 * (head.payload_bytes + vqz.overhead_bytes)
    single = None if head.is_archive else head.entries[0]
    levels = [{"name": name, "codebook_size": k} for name, k in zip(head.level_names, head.codebook_sizes)]
    if single is not None:
        for level, shape in zip(levels, single.shapes):
            level["shape"] = shape
    summary = {
        "prior": head.prior, "tokenizer": head.tokenizer, "files": len(head.entries),
        "levels": levels, "label": single.label if single else None, "codes": head.num_codes,
        "payload_bytes": head.payload_bytes, "file_bytes": head.payload_bytes + vqz.overhead_bytes,
        "bits_per_code": payload_bits / max(head.num_codes, 1),
        "bits_per_file": payload_bits / len(head.entries),
        "raw_bits_per_code": head.raw_bits / max(head.num_codes, 1),
        "ratio_to_raw": head.raw_bits / max(payload_bits, 1),
        "ratio_to_raw_with_header": head.raw_bits / total_bits,
    }
    sources = [entry.source for entry in head.entries]
    if all(s.get("kind") == "audio" and s.get("duration") for s in sources):
        summary["bits_per_second"] = payload_bits / sum(float(s["duration"]) for s in sources)
    return summary


def format_vqz(s: dict) -> str:
    kind = "prior-coded token file" if s["files"] == 1 else f"archive of {s['files']} prior-coded token files"
    shapes = ", ".join(f"{lv['name']} {'x'.join(map(str, lv['shape'])) + ' ' if 'shape' in lv else ''}"
                       f"(K={lv['codebook_size']})" for lv in s["levels"])
    per_file = "" if s["files"] == 1 else f" ({s['bits_per_file']:.1f} bits per file)"
    lines = [f"{kind}: prior {s['prior']}, tokenizer {s['tokenizer']}",
             f"levels        {shapes}" + (f"; label {s['label']}" if s["files"] == 1 else ""),
             f"size          {s['payload_bytes']} bytes of payload{per_file}, {s['file_bytes']} bytes with the header",
             f"rate          {s['bits_per_code']:.3f} bits per code (raw codes: {s['raw_bits_per_code']:.0f}); "
             f"{s['ratio_to_raw']:.2f}x smaller than the raw codes ({s['ratio_to_raw_with_header']:.2f}x with the header)"]
    if "bits_per_second" in s:
        lines.append(f"bitrate       {s['bits_per_second']:.0f} bit/s of audio")
    return "\n".join(lines)
