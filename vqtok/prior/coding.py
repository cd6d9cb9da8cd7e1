"""Prior-coded token files (.vqz): a token file's codes arithmetic-coded under a prior's next-code distributions.

File layout (format version 1), little-endian::

    magic b"VQTZ" | format version u16 | header length u32 | header (UTF-8 JSON) | CRC32 of all before u32 | payload

The JSON header holds the prior's and the tokenizer's fingerprints, each level's name, shape and codebook
size, the token file's label and source record (what its sidecar needs back), the class the codes were coded
under, the payload's length and CRC32, and where the prior was (a hint for `vqtok decompress`). The payload
is one arithmetic-coded message (`vqtok.prior.arithmetic`): every level in turn (top first), every code in
raster order, and for a sequence with EOS its end as well, each under the frequency table of the prior's
logits at that step. Encoder and decoder compute those logits through the same incremental path as the
sampler (`PixelCNNSteps`, `TransformerSteps`), one item, fp32 on the CPU, one thread, no autocast, so their
tables are identical; a file therefore decodes on the machine and torch build that wrote it (another CPU
or library may round a logit differently).
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
from vqtok.tokenizer.checkpoint import fingerprint

MAGIC = b"VQTZ"
FORMAT_VERSION = 1
SUFFIX = ".vqz"
_PREFIX = struct.Struct("<4sHI")  # magic, format version, header length
_CRC = struct.Struct("<I")


@dataclass
class VqzHeader:
    """What a .vqz file says about its payload (stored as JSON)."""

    prior: str  # prior_fingerprint of the prior(s) that coded it
    tokenizer: str  # fingerprint of the tokenizer that made the codes
    levels: list[dict]  # per level, top first: {"name", "shape", "codebook_size"}
    label: int | None  # the token file's label, restored in its sidecar
    coded_class: int | None  # class the codes were coded under (num_classes: the null class); None: no classes
    source: dict  # the token file's source record (input size, rate, path)
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


@contextmanager
def _deterministic() -> Iterator[None]:
    """One CPU thread and no autograd while coding: the logits depend on the inputs alone."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            yield
    finally:
        torch.set_num_threads(threads)


def _code(priors: list[CodePrior], shapes: list[tuple[int, ...]], coded_class: int | None,
          choose: Callable[[int, int, np.ndarray], int]) -> list[np.ndarray]:
    """Walk every level's steps (top first); choose(level, step, freqs) gives the symbol at each step (the encoder
    returns the known code, the decoder reads it from the payload). Returns the codes per level, checked."""
    levels: list[np.ndarray] = []
    with _deterministic():
        for index, (prior, shape) in enumerate(zip(priors, shapes)):
            net, lay = prior.net.float().cpu().eval(), prior.layout
            labels = torch.tensor([coded_class]) if lay.num_classes else None
            top = torch.from_numpy(levels[0])[None] if lay.level == "bottom" else None  # (1, ...) known upper codes
            count = math.prod(shape) + int(lay.eos)  # a sequence with EOS codes its end too
            if lay.kind == "pixelcnn":
                steps = PixelCNNSteps(net, 1, tuple(shape), labels, top)
            elif top is not None:
                steps = TransformerSteps(net, 1, count, labels, prior._cond_1d(top, count))
            else:
                if count > net.config.max_len:
                    raise VqtokError(f"{count} steps (codes{' + EOS' if lay.eos else ''}) exceed the prior's "
                                     f"max_len={net.config.max_len}; this item is too long for it")
                steps = TransformerSteps(net, 1, count, labels)
            symbols = np.zeros(count, dtype=np.int64)
            for t in range(count):
                symbols[t] = choose(index, t, frequencies(steps.next_logits()[0]))
                steps.push(torch.tensor([int(symbols[t])]))
            codes = symbols[: math.prod(shape)]
            if (codes >= lay.codebook_size).any() or (lay.eos and symbols[-1] != lay.vocab.eos):
                raise VqtokError("the payload decodes to invalid codes (corrupted, or coded with another prior)")
            levels.append(codes.reshape(shape))
    return levels


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


def encode_payload(priors: list[CodePrior], levels: list[np.ndarray], coded: int | None) -> bytes:
    """The codes of every level (top first) -> one arithmetic-coded payload."""
    encoder = ArithmeticEncoder()
    symbols = [_symbols(p, codes) for p, codes in zip(priors, levels)]

    def choose(level: int, t: int, freqs: np.ndarray) -> int:
        encoder.encode(int(symbols[level][t]), freqs)
        return int(symbols[level][t])

    _code(priors, [tuple(c.shape) for c in levels], coded, choose)
    return encoder.finish()


def decode_payload(priors: list[CodePrior], header: VqzHeader, payload: bytes) -> list[np.ndarray]:
    """A payload and its header -> the codes of every level (top first)."""
    decoder = ArithmeticDecoder(payload)
    return _code(priors, [tuple(lv["shape"]) for lv in header.levels], header.coded_class,
                 lambda level, t, freqs: decoder.decode(freqs))


# --------------------------------------------------------------------------- the file
def pack(header: VqzHeader, payload: bytes) -> bytes:
    """Header and payload -> the bytes of a .vqz file."""
    text = json.dumps(asdict(header), sort_keys=True, separators=(",", ":")).encode()
    head = _PREFIX.pack(MAGIC, FORMAT_VERSION, len(text)) + text
    return head + _CRC.pack(zlib.crc32(head)) + payload


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
    if version < 1:
        raise VqtokError(f"{name}: format version {version} does not exist")
    try:
        fields = json.loads(data[_PREFIX.size : end])
        header = VqzHeader(**fields)
    except (ValueError, TypeError) as err:
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


def compress(priors: list[CodePrior], tok_fingerprint: str, levels: list[np.ndarray], label: int | None,
             coded: int | None, source: dict, prior_path: str | None = None) -> bytes:
    """Codes per level (top first) and what their sidecar holds -> the bytes of a .vqz file."""
    payload = encode_payload(priors, levels, coded)
    header = VqzHeader(
        prior=prior_fingerprint(priors), tokenizer=tok_fingerprint,
        levels=[{"name": p.layout.level, "shape": list(c.shape), "codebook_size": p.layout.codebook_size}
                for p, c in zip(priors, levels)],
        label=label, coded_class=coded, source=source, payload_bytes=len(payload),
        payload_crc32=zlib.crc32(payload), prior_path=prior_path,
    )
    return pack(header, payload)


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
