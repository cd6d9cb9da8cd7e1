"""Prior-coded token files (.vqz): a token file's codes arithmetic-coded under a prior's next-code distributions.

File layout (format version 2), little-endian::

    magic b"VQTZ" | format version u16 | header length u32 | header | CRC32 of all before u32 | payload

The header is binary: the prior's and the tokenizer's fingerprints (8 raw bytes each), the number of levels,
the token file's label and the class the codes were coded under (i16, -1: none), the payload's length and
CRC32, then per level (top first) its rank, codebook size and shape (u32 each), and last an optional record
(compact JSON, length u16, 0 bytes when empty) with the token file's source record (what its sidecar needs
back) and where the prior was (a hint for `vqtok decompress`). Level names follow from the level count.

The payload is one arithmetic-coded message (`vqtok.prior.arithmetic`): every level in turn (top first),
every code in raster order, and for a sequence with EOS its end as well, each under the frequency table of
the prior's logits at that step. Encoder and decoder compute those logits through the same incremental path
as the sampler (`PixelCNNSteps`, `TransformerSteps`), fp32 on the CPU, one thread, no autocast, and with
oneDNN and NNPACK off: PyTorch's native convolution runs each map of a batch through its own GEMM, so a PixelCNN gives
every map bit-identical logits whether it is coded alone or in a batch (`compress_many`). A file decodes on
the machine and torch build that wrote it (another CPU or library may round a logit differently).
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from vqtok.errors import VqtokError
from vqtok.prior.arithmetic import ArithmeticDecoder, ArithmeticEncoder, frequencies
from vqtok.prior.model import CodePrior
from vqtok.prior.sampling import PixelCNNSteps, TransformerSteps
from vqtok.tokenizer.base import LEVEL_NAMES
from vqtok.tokenizer.checkpoint import fingerprint

MAGIC = b"VQTZ"
FORMAT_VERSION = 2  # 2: binary header (1: JSON header, no longer read)
SUFFIX = ".vqz"
_PREFIX = struct.Struct("<4sHI")  # magic, format version, header length
_CRC = struct.Struct("<I")
_FIXED = struct.Struct("<8s8sBhhII")  # prior and tokenizer fingerprints, levels, label, class, payload length, CRC32
_LEVEL = struct.Struct("<BI")  # rank, codebook size; then the shape, u32 each
_DIM = struct.Struct("<I")
_EXTRA = struct.Struct("<H")  # length of the optional JSON record
_NONE = -1  # label / coded class absent


@dataclass
class VqzHeader:
    """What a .vqz file says about its payload (stored in binary; see the module doc)."""

    prior: str  # prior_fingerprint of the prior(s) that coded it
    tokenizer: str  # fingerprint of the tokenizer that made the codes
    levels: list[dict]  # per level, top first: {"name", "shape", "codebook_size"}
    label: int | None  # the token file's label, restored in its sidecar
    coded_class: int | None  # class the codes were coded under (num_classes: the null class); None: no classes
    source: dict  # the token file's source record (input size, rate, path); {} when not kept
    payload_bytes: int
    payload_crc32: int
    prior_path: str | None = None  # where the prior was at compression (vqtok decompress looks there by default)

    @property
    def num_codes(self) -> int:
        return sum(math.prod(level["shape"]) for level in self.levels)

    @property
    def raw_bits(self) -> int:
        """The codes at ceil(log2 K) bits each: what the payload is compared with."""
        return sum(math.prod(lv["shape"]) * max(1, math.ceil(math.log2(lv["codebook_size"]))) for lv in self.levels)


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
        described = json.dumps({"config": prior.config, "layout": asdict(prior.layout)}, sort_keys=True)
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
    """Whether items may share a batch bit-exactly: PixelCNN levels only (a Transformer's linear layers go
    through a BLAS GEMM whose rounding depends on the number of rows, so its items are coded one at a time)."""
    return all(p.layout.kind == "pixelcnn" for p in priors)


def _code(priors: list[CodePrior], shapes: list[tuple[int, ...]], classes: list[int | None],
          choose: Callable[[int, int, int, np.ndarray], int]) -> list[list[np.ndarray]]:
    """Walk every level's steps (top first) for b items of the same shapes at once (b > 1: `batchable` priors
    only); choose(item, level, step, freqs) gives the symbol at each step (the encoder returns the known code,
    the decoder reads it from that item's payload). Returns each item's codes per level, checked."""
    b = len(classes)
    if b > 1 and not batchable(priors):
        raise ValueError("only PixelCNN priors code several items in one batch bit-exactly")
    levels: list[np.ndarray] = []  # per level (b, *shape)
    with _deterministic():
        for index, (prior, shape) in enumerate(zip(priors, shapes)):
            net, lay = prior.net.float().cpu().eval(), prior.layout
            labels = torch.tensor(classes) if lay.num_classes else None
            top = torch.from_numpy(levels[0]) if lay.level == "bottom" else None  # (b, ...) known upper codes
            count = math.prod(shape) + int(lay.eos)  # a sequence with EOS codes its end too
            if lay.kind == "pixelcnn":
                steps = PixelCNNSteps(net, b, tuple(shape), labels, top)
            elif top is not None:
                steps = TransformerSteps(net, b, count, labels, prior._cond_1d(top, count))
            else:
                if count > net.config.max_len:
                    raise VqtokError(f"{count} steps (codes{' + EOS' if lay.eos else ''}) exceed the prior's "
                                     f"max_len={net.config.max_len}; this item is too long for it")
                steps = TransformerSteps(net, b, count, labels)
            symbols = np.zeros((b, count), dtype=np.int64)
            for t in range(count):
                logits = steps.next_logits()  # (b, K)
                for i in range(b):
                    symbols[i, t] = choose(i, index, t, frequencies(logits[i]))
                steps.push(torch.from_numpy(symbols[:, t].copy()))
            codes = symbols[:, : math.prod(shape)]
            if (codes >= lay.codebook_size).any() or (lay.eos and (symbols[:, -1] != lay.vocab.eos).any()):
                raise VqtokError("the payload decodes to invalid codes (corrupted, or coded with another prior)")
            levels.append(codes.reshape(b, *shape))
    return [[level[i] for level in levels] for i in range(b)]


def _symbols(prior: CodePrior, codes: np.ndarray) -> np.ndarray:
    """A level's codes in coding order: raster order, then EOS for a sequence that has one."""
    flat = np.asarray(codes, dtype=np.int64).reshape(-1)
    return np.append(flat, prior.layout.vocab.eos) if prior.layout.eos else flat


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


def encode_payloads(priors: list[CodePrior], items: list[list[np.ndarray]], classes: list[int | None],
                    batch: int = 32) -> list[bytes]:
    """Each item's codes per level (top first) -> its arithmetic-coded payload, items of the same shapes
    sharing a batch through the prior: every payload is byte-identical to coding its item alone."""
    payloads: list[bytes] = [b""] * len(items)
    for group in _batches([tuple(c.shape for c in item) for item in items], priors, batch):
        encoders = [ArithmeticEncoder() for _ in group]
        symbols = [[_symbols(p, codes) for p, codes in zip(priors, items[i])] for i in group]

        def choose(i: int, level: int, t: int, freqs: np.ndarray) -> int:
            encoders[i].encode(int(symbols[i][level][t]), freqs)
            return int(symbols[i][level][t])

        _code(priors, [tuple(c.shape) for c in items[group[0]]], [classes[i] for i in group], choose)
        for i, encoder in zip(group, encoders):
            payloads[i] = encoder.finish()
    return payloads


def decode_payloads(priors: list[CodePrior], vqzs: list[Vqz], batch: int = 32) -> list[list[np.ndarray]]:
    """Checked .vqz files -> each one's codes per level (top first), files of the same shapes sharing a batch."""
    out: list[list[np.ndarray]] = [[] for _ in vqzs]
    shapes = [tuple(tuple(lv["shape"]) for lv in v.header.levels) for v in vqzs]
    for group in _batches(shapes, priors, batch):
        decoders = [ArithmeticDecoder(vqzs[i].payload) for i in group]
        decoded = _code(priors, list(shapes[group[0]]), [vqzs[i].header.coded_class for i in group],
                        lambda i, level, t, freqs: decoders[i].decode(freqs))
        for i, levels in zip(group, decoded):
            out[i] = levels
    return out


def encode_payload(priors: list[CodePrior], levels: list[np.ndarray], coded: int | None) -> bytes:
    """The codes of every level (top first) -> one arithmetic-coded payload."""
    return encode_payloads(priors, [levels], [coded])[0]


def decode_payload(priors: list[CodePrior], header: VqzHeader, payload: bytes) -> list[np.ndarray]:
    """A payload and its header -> the codes of every level (top first)."""
    return decode_payloads(priors, [Vqz(header, payload, 0)])[0]


# --------------------------------------------------------------------------- the file
def _fingerprint_bytes(text: str, what: str) -> bytes:
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raw = b""
    if len(raw) != 8:
        raise ValueError(f"the {what} fingerprint {text!r} is not 16 hex digits")
    return raw


def pack(header: VqzHeader, payload: bytes) -> bytes:
    """Header and payload -> the bytes of a .vqz file."""
    def optional(value: int | None) -> int:
        return _NONE if value is None else value

    fields = [_FIXED.pack(_fingerprint_bytes(header.prior, "prior"), _fingerprint_bytes(header.tokenizer, "tokenizer"),
                          len(header.levels), optional(header.label), optional(header.coded_class),
                          header.payload_bytes, header.payload_crc32)]
    for level in header.levels:
        fields.append(_LEVEL.pack(len(level["shape"]), level["codebook_size"]))
        fields.extend(_DIM.pack(d) for d in level["shape"])
    extra = {k: v for k, v in (("source", header.source), ("prior_path", header.prior_path)) if v}
    text = json.dumps(extra, sort_keys=True, separators=(",", ":")).encode() if extra else b""
    fields.append(_EXTRA.pack(len(text)) + text)
    body = b"".join(fields)
    head = _PREFIX.pack(MAGIC, FORMAT_VERSION, len(body)) + body
    return head + _CRC.pack(zlib.crc32(head)) + payload


def _parse_header(body: bytes) -> VqzHeader:
    """The binary header (its CRC already checked) -> VqzHeader; struct.error or ValueError if malformed."""
    prior, tok, count, label, coded, payload_bytes, payload_crc = _FIXED.unpack_from(body)
    at, levels = _FIXED.size, []
    names = LEVEL_NAMES.get(count)
    if names is None:
        raise ValueError(f"{count} levels")
    for name in names:
        rank, size = _LEVEL.unpack_from(body, at)
        at += _LEVEL.size
        shape = [_DIM.unpack_from(body, at + _DIM.size * d)[0] for d in range(rank)]
        at += _DIM.size * rank
        levels.append({"name": name, "shape": shape, "codebook_size": size})
    (length,) = _EXTRA.unpack_from(body, at)
    at += _EXTRA.size
    if at + length != len(body):
        raise ValueError(f"{len(body) - at - length} bytes left over")
    extra = json.loads(body[at:]) if length else {}
    return VqzHeader(prior=prior.hex(), tokenizer=tok.hex(), levels=levels,
                     label=None if label == _NONE else label, coded_class=None if coded == _NONE else coded,
                     source=dict(extra.get("source", {})), payload_bytes=payload_bytes,
                     payload_crc32=payload_crc, prior_path=extra.get("prior_path"))


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
    except (struct.error, ValueError, TypeError) as err:
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


def check_prior(vqz: Vqz, priors: list[CodePrior], name: str) -> None:
    """Refuse priors other than the ones that coded the file, naming both fingerprints."""
    have = prior_fingerprint(priors)
    if vqz.header.prior != have:
        raise VqtokError(f"{name}: coded with prior {vqz.header.prior}, but the prior given is {have}; "
                         "decompress with the prior that compressed it")


def compress_many(priors: list[CodePrior], tok_fingerprint: str, items: list[CodedItem],
                  prior_path: str | None = None, batch: int = 32) -> list[bytes]:
    """Token files -> the bytes of their .vqz files (each the same as `compress` gives for it alone)."""
    payloads = encode_payloads(priors, [item.levels for item in items], [item.coded_class for item in items], batch)
    prior = prior_fingerprint(priors)
    files = []
    for item, payload in zip(items, payloads):
        header = VqzHeader(
            prior=prior, tokenizer=tok_fingerprint,
            levels=[{"name": p.layout.level, "shape": list(c.shape), "codebook_size": p.layout.codebook_size}
                    for p, c in zip(priors, item.levels)],
            label=item.label, coded_class=item.coded_class, source=item.source, payload_bytes=len(payload),
            payload_crc32=zlib.crc32(payload), prior_path=prior_path,
        )
        files.append(pack(header, payload))
    return files


def compress(priors: list[CodePrior], tok_fingerprint: str, levels: list[np.ndarray], label: int | None,
             coded: int | None, source: dict, prior_path: str | None = None) -> bytes:
    """Codes per level (top first) and what their sidecar holds -> the bytes of a .vqz file."""
    return compress_many(priors, tok_fingerprint, [CodedItem(levels, label, coded, source)], prior_path)[0]


# --------------------------------------------------------------------------- vqtok info
def vqz_summary(vqz: Vqz) -> dict:
    """What `vqtok info X.vqz` shows: levels, label, sizes, bits per code and the ratio to the raw codes."""
    head = vqz.header
    payload_bits = 8 * head.payload_bytes
    total_bits = 8 * (head.payload_bytes + vqz.overhead_bytes)
    summary = {
        "prior": head.prior, "tokenizer": head.tokenizer,
        "levels": head.levels, "label": head.label, "codes": head.num_codes,
        "payload_bytes": head.payload_bytes, "file_bytes": head.payload_bytes + vqz.overhead_bytes,
        "bits_per_code": payload_bits / max(head.num_codes, 1),
        "raw_bits_per_code": head.raw_bits / max(head.num_codes, 1),
        "ratio_to_raw": head.raw_bits / max(payload_bits, 1),
        "ratio_to_raw_with_header": head.raw_bits / total_bits,
    }
    if head.source.get("kind") == "audio" and head.source.get("duration"):
        summary["bits_per_second"] = payload_bits / float(head.source["duration"])
    return summary


def format_vqz(s: dict) -> str:
    shapes = ", ".join(f"{lv['name']} {'x'.join(map(str, lv['shape']))} (K={lv['codebook_size']})" for lv in s["levels"])
    lines = [f"prior-coded token file: prior {s['prior']}, tokenizer {s['tokenizer']}",
             f"levels        {shapes}; label {s['label']}",
             f"size          {s['payload_bytes']} bytes of payload, {s['file_bytes']} bytes with the header",
             f"rate          {s['bits_per_code']:.3f} bits per code (raw codes: {s['raw_bits_per_code']:.0f}); "
             f"{s['ratio_to_raw']:.2f}x smaller than the raw codes ({s['ratio_to_raw_with_header']:.2f}x with the header)"]
    if "bits_per_second" in s:
        lines.append(f"bitrate       {s['bits_per_second']:.0f} bit/s of audio")
    return "\n".join(lines)
