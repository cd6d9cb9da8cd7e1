"""Encode and decode files with a tokenizer exported by `vqtok export --onnx`, without torch: numpy, onnxruntime,
soundfile and soxr only (this file imports nothing else, not even vqtok, so it runs as a script where torch is not
installed).

It follows the library's rules (vqtok/codec.py): audio mixed to mono, resampled with soxr HQ to the tokenizer's
rate, brought to its speech level by the gated RMS of speech_level.py (reimplemented here in numpy; tests hold the
two equal), coded block-wise in the canonical blocks of streaming.py, and written as the same token file and
sidecar as `vqtok encode` (tokenizer/codes.py), which `vqtok decode` reads; it reads vqtok's token files back the
same way: decoded block-wise, postfiltered, the gain undone, trimmed, written as 16-bit WAV or 8-bit PNG.
Images are 8-bit PNGs, read and written here with zlib. The codes are the graph's: its fp32 code search can pick
the other code of a near-tie where torch decides in fp64 (docs/onnx.md gives the share).

    python vqtok/integrations/ort_runner.py encode ONNX_DIR speech.flac speech.npy
    python vqtok/integrations/ort_runner.py decode ONNX_DIR speech.npy speech.wav
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import math
import os
import struct
import sys
import tempfile
import zlib
from pathlib import Path

import numpy as np
import onnxruntime as ort
import soundfile as sf
import soxr

FORMAT, FORMAT_VERSION = "vqtok.codes", 1
# Gated RMS level, as speech_level.py: 400 ms blocks every 100 ms, absolute gate -70 dBFS, relative gate -10 dB.
STEPS_PER_BLOCK, BLOCK_SECONDS, ABSOLUTE_GATE_DB, RELATIVE_GATE_DB, MAX_GAIN_DB = 4, 0.4, -70.0, -10.0, 30.0
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class RunnerError(Exception):
    """A one-line problem with an input, naming it; the command line prints it and exits with code 2."""


# ------------------------------------------------------------------ level, audio, images
def level_db(x: np.ndarray, sample_rate: int) -> float:
    """Gated RMS level of a clip (T,) in dBFS (-inf when silent): speech_level.level_db in numpy."""
    step = max(1, round(BLOCK_SECONDS * sample_rate / STEPS_PER_BLOCK))  # samples per 100 ms
    x = np.asarray(x, np.float64).reshape(-1)
    whole = len(x) // step * step
    steps = np.square(x[:whole]).reshape(-1, step).sum(axis=1)  # (steps,) energy of each 100 ms
    if len(steps) >= STEPS_PER_BLOCK:
        powers = np.convolve(steps, np.ones(STEPS_PER_BLOCK), mode="valid") / (STEPS_PER_BLOCK * step)
    else:  # shorter than one block: the clip is one block
        powers = np.array([(steps.sum() + np.square(x[whole:]).sum()) / max(len(x), 1)])
    powers = powers[powers > 10 ** (ABSOLUTE_GATE_DB / 10)]
    if not len(powers):
        return -math.inf
    powers = powers[powers > powers.mean() * 10 ** (RELATIVE_GATE_DB / 10)]
    return float(10 * np.log10(powers.mean()))


def gain_to(level: float, target_db: float) -> float:
    """dB bringing a clip at `level` to `target_db`, at most MAX_GAIN_DB either way; 0 for silence."""
    return 0.0 if not math.isfinite(level) else float(np.clip(target_db - level, -MAX_GAIN_DB, MAX_GAIN_DB))


def apply_gain(x: np.ndarray, gain_db: float) -> np.ndarray:
    return (np.asarray(x, np.float32) * np.float32(10 ** (gain_db / 20))).astype(np.float32, copy=False)


def read_audio(path: Path, sample_rate: int) -> tuple[np.ndarray, dict]:
    """Mono float32 (T,) at `sample_rate` (T = ceil(frames * rate / file rate)) and what the sidecar records."""
    try:
        data, orig = sf.read(str(path), dtype="float32", always_2d=True)  # (frames, channels)
    except (sf.SoundFileError, RuntimeError, OSError, ValueError) as err:
        raise RunnerError(f"{path}: not readable as audio ({' '.join(str(err).split())})") from None
    frames, channels = data.shape
    if frames == 0:
        raise RunnerError(f"{path}: holds no audio frames")
    bad = int(np.count_nonzero(~np.isfinite(data)))
    if bad:
        raise RunnerError(f"{path}: {bad} of {data.size} samples are NaN or Inf; re-export or remove the file")
    mono = data.mean(axis=1)
    length = math.ceil(frames * sample_rate / orig)
    if orig != sample_rate:  # soxr HQ, streamed as data/stream.py reads (the same samples as one call)
        mono = soxr.ResampleStream(orig, sample_rate, 1, dtype="float32", quality="HQ").resample_chunk(mono, last=True)
    mono = np.pad(mono, (0, max(0, length - len(mono))))[:length]
    source = {"kind": "audio", "path": str(path), "length": length, "sample_rate": sample_rate,
              "orig_sample_rate": int(orig), "channels": int(channels), "orig_frames": int(frames),
              "duration": frames / orig}
    return np.ascontiguousarray(mono, np.float32), source


def resample(x: np.ndarray, orig: int, target: int) -> np.ndarray:
    """data/audio.resample: soxr HQ, then fixed to ceil(T * target / orig) samples."""
    out = soxr.resample(x, orig, target, quality="soxr_hq")
    n = math.ceil(len(x) * target / orig)
    return np.pad(out, (0, max(0, n - len(out))))[:n].astype(np.float32, copy=False)


def _paeth(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    p = a.astype(np.int16) + b - c
    pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
    return np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))


def read_png(path: Path) -> np.ndarray:
    """An 8-bit, non-interlaced PNG (grey, grey + alpha, RGB, RGBA) -> uint8 (H, W, channels)."""
    blob = path.read_bytes()
    if not blob.startswith(PNG_SIGNATURE):
        raise RunnerError(f"{path}: not a PNG file; the runner reads 8-bit PNG images")
    pos, chunks, header = 8, [], None
    while pos + 8 <= len(blob):
        size, chunk_type = struct.unpack(">I4s", blob[pos : pos + 8])
        body = blob[pos + 8 : pos + 8 + size]
        if chunk_type == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif chunk_type == b"IDAT":
            chunks.append(body)
        pos += 12 + size
    if header is None:
        raise RunnerError(f"{path}: a PNG without a header")
    width, height, depth, color, _, _, interlace = header
    channels = {0: 1, 2: 3, 4: 2, 6: 4}.get(color)
    if depth != 8 or channels is None or interlace:
        raise RunnerError(f"{path}: a PNG of bit depth {depth}, colour type {color}, interlace {interlace}; the runner "
                          "reads 8-bit grey or RGB(A) PNGs without interlacing (re-save it so)")
    try:
        raw = np.frombuffer(zlib.decompress(b"".join(chunks)), np.uint8)
    except zlib.error as err:
        raise RunnerError(f"{path}: damaged PNG data ({err})") from None
    stride = width * channels
    rows = raw[: height * (stride + 1)].reshape(height, stride + 1)
    out = np.zeros((height, stride), np.uint8)
    prev = np.zeros(stride, np.uint8)
    for y in range(height):  # undo each row's filter (PNG spec, section 9)
        row_filter, line = rows[y, 0], rows[y, 1:].astype(np.uint8)
        if row_filter == 0:
            cur = line
        elif row_filter == 2:
            cur = line + prev
        else:  # Sub, Average and Paeth depend on the pixel to the left: pixel by pixel
            cur = np.zeros(stride, np.uint8)
            for i in range(stride):
                left = int(cur[i - channels]) if i >= channels else 0
                up, corner = int(prev[i]), int(prev[i - channels]) if i >= channels else 0
                pred = {1: left, 3: (left + up) // 2,
                        4: int(_paeth(np.array(left), np.array(up), np.array(corner)))}.get(int(row_filter))
                if pred is None:
                    raise RunnerError(f"{path}: unknown PNG row filter {row_filter}")
                cur[i] = (int(line[i]) + pred) & 0xFF
        out[y], prev = cur, cur
    return out.reshape(height, width, channels)


def image_input(path: Path, channels: int) -> np.ndarray:
    """A PNG as the library reads it (data/images.load_image): float32 (C, H, W) in [0, 1], alpha dropped, RGB to
    grey as Pillow's convert("L") (ITU-R 601 weights in 16-bit fixed point)."""
    pixels = read_png(path)
    pixels = pixels[..., :3] if pixels.shape[2] in (3, 4) else pixels[..., :1]
    if channels == 1 and pixels.shape[2] == 3:
        r, g, b = (pixels[..., i].astype(np.uint32) for i in range(3))
        pixels = ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).astype(np.uint8)[..., None]
    elif channels == 3 and pixels.shape[2] == 1:
        pixels = np.repeat(pixels, 3, axis=2)
    return np.ascontiguousarray(pixels.transpose(2, 0, 1).astype(np.float32) / 255.0)


def png_bytes(pixels: np.ndarray) -> bytes:
    """uint8 (H, W) or (H, W, 1 | 3) -> an 8-bit PNG, rows unfiltered."""
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[..., 0]
    height, width = pixels.shape[:2]
    color = 0 if pixels.ndim == 2 else 2
    rows = np.concatenate([np.zeros((height, 1), np.uint8), pixels.reshape(height, -1)], axis=1)

    def chunk(chunk_type: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + chunk_type + body
                + struct.pack(">I", zlib.crc32(chunk_type + body) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", width, height, 8, color, 0, 0, 0)
    data = zlib.compress(rows.tobytes(), 9)
    return PNG_SIGNATURE + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def atomic_write(path: Path, data: bytes) -> None:
    """Write to a temporary file beside `path`, then rename it into place (mode as a plain open() gives)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ------------------------------------------------------------------ audio and images
class Audio:
    """Audio for the runner (modality.Audio's rules): (T,) in canonical blocks, files read and levelled, WAV out."""

    ndim, what = 1, "audio (T,)"

    def encode(self, tok: OrtTokenizer, x: np.ndarray) -> list[np.ndarray]:
        padded = math.ceil(len(x) / tok.hop) * tok.hop
        x = np.pad(x, (0, padded - len(x)))
        blocks, ctx = tok.summary["block_frames"], tok.context
        parts: list[list[np.ndarray]] = [[] for _ in tok.ratio]
        for start in range(0, padded // tok.hop, blocks):
            stop = min(start + blocks, padded // tok.hop)
            a, b = max(0, start * tok.hop - ctx["encode_left"]), min(padded, stop * tok.hop + ctx["encode_right"])
            codes = tok.encoder.run(None, {"input": x[None, None, a:b]})
            first = start - a // tok.hop
            for part, c, r in zip(parts, codes, tok.ratio):  # time is the last axis: (T,) or (codebooks, T)
                part.append(c[0, ..., first * r : (first + stop - start) * r])
        return [np.concatenate(p, axis=-1) for p in parts]

    def decode(self, tok: OrtTokenizer, levels: list[np.ndarray], size, postfilter: bool) -> np.ndarray:
        n_hops = levels[0].shape[-1] // tok.ratio[0]
        blocks, ctx = tok.summary["block_frames"], tok.context
        pieces = []
        for start in range(0, n_hops, blocks):
            stop = min(start + blocks, n_hops)
            a, b = max(0, start - ctx["decode_left"]), min(n_hops, stop + ctx["decode_right"])
            feed = {n: c[None, ..., a * r : b * r] for n, c, r in zip(tok.level_names, levels, tok.ratio)}
            y = tok.decoder.run(None, feed)[0][0, 0]
            pieces.append(y[(start - a) * tok.hop : (stop - a) * tok.hop])
        audio = np.concatenate(pieces) if pieces else np.zeros(0, np.float32)
        audio = audio[: size] if size is not None else audio
        if postfilter and tok.postfilter is not None and tok.postfilter_graph is not None and len(audio):
            audio = tok.postfilter_graph.run(None, {"audio": audio[None]})[0][0]
        return audio

    def read(self, tok: OrtTokenizer, path: Path, as_is: bool) -> tuple[np.ndarray, dict]:
        audio, source = read_audio(path, tok.sample_rate)
        if len(audio) < tok.hop:
            raise RunnerError(f"{path}: {len(audio)} samples is shorter than one frame ({tok.hop} samples)")
        if tok.level_db is not None and not as_is:
            source["gain_db"] = gain_to(level_db(audio, tok.sample_rate), tok.level_db)
            audio = apply_gain(audio, source["gain_db"])
        return audio, source

    def file_bytes(self, tok: OrtTokenizer, levels: list[np.ndarray], source: dict, postfilter: bool,
                   sample_rate: str) -> bytes:
        wav = apply_gain(tok.decode(levels, int(source["length"]), postfilter), -source.get("gain_db", 0.0))
        rate = tok.sample_rate
        if sample_rate == "original":
            rate = int(source.get("orig_sample_rate", rate))
            wav = resample(wav, tok.sample_rate, rate) if rate != tok.sample_rate else wav
            n = int(source.get("orig_frames", len(wav)))
            wav = np.pad(wav, (0, max(0, n - len(wav))))[:n]
        elif sample_rate != "model":
            rate = int(sample_rate)
            wav = resample(wav, tok.sample_rate, rate) if rate != tok.sample_rate else wav
        buffer = io.BytesIO()
        sf.write(buffer, np.clip(wav, -1.0, 1.0), rate, format="WAV", subtype="PCM_16")
        return buffer.getvalue()


class Image:
    """Images for the runner (modality.Image's rules): (C, H, W) whole, 8-bit PNG in and out."""

    ndim, what = 3, "an image (C, H, W)"

    def encode(self, tok: OrtTokenizer, x: np.ndarray) -> list[np.ndarray]:
        return [c[0] for c in tok.encoder.run(None, {"input": x[None]})]

    def decode(self, tok: OrtTokenizer, levels: list[np.ndarray], size, postfilter: bool) -> np.ndarray:
        out = tok.decoder.run(None, dict(zip(tok.level_names, [c[None] for c in levels])))[0][0]
        return out if size is None else out[:, : size[0], : size[1]]

    def read(self, tok: OrtTokenizer, path: Path, as_is: bool) -> tuple[np.ndarray, dict]:
        image = image_input(path, tok.config["in_channels"])
        h, w = image.shape[1:]
        if min(h, w) < tok.hop:
            raise RunnerError(f"{path}: {h}x{w} pixels is smaller than one code ({tok.hop}x{tok.hop})")
        return image, {"kind": "image", "path": str(path), "size": [int(h), int(w)], "channels": int(image.shape[0])}

    def file_bytes(self, tok: OrtTokenizer, levels: list[np.ndarray], source: dict, postfilter: bool,
                   sample_rate: str) -> bytes:
        image = tok.decode(levels, tuple(source["size"]))
        return png_bytes(np.round(np.clip(image, 0.0, 1.0) * 255).astype(np.uint8).transpose(1, 2, 0))


SIGNALS = {1: Audio(), 2: Image()}  # a tokenizer's spatial axes (its summary's dims) -> what its inputs are


# ------------------------------------------------------------------ the tokenizer
class OrtTokenizer:
    """The graphs of one exported tokenizer: `encode` / `decode` arrays, `encode_file` / `decode_file` files."""

    def __init__(self, onnx_dir: str | os.PathLike, threads: int = 1):
        folder = Path(onnx_dir)
        options = ort.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = threads

        def session(name: str) -> ort.InferenceSession | None:
            path = folder / f"{name}.onnx"
            if not path.is_file():
                return None
            return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

        self.encoder, self.decoder = session("encoder"), session("decoder")
        self.postfilter_graph = session("postfilter")
        if self.encoder is None or self.decoder is None:
            raise RunnerError(f"{folder}: no encoder.onnx and decoder.onnx; write them with vqtok export --onnx")
        meta = self.encoder.get_modelmeta().custom_metadata_map
        try:
            self.summary = json.loads(meta["vqtok.tokenizer"])
            self.config = json.loads(meta["vqtok.config"])
            self.level_names = json.loads(meta["vqtok.level_names"])
            self.version = meta["vqtok.version"]
            self.context = json.loads(meta.get("vqtok.context", "null"))
            self.level_db = json.loads(meta.get("vqtok.level_db", "null"))
            self.postfilter = json.loads(meta.get("vqtok.postfilter", "null"))
        except (KeyError, json.JSONDecodeError) as err:
            raise RunnerError(f"{folder}/encoder.onnx: not a vqtok export (metadata {err} missing or damaged)"
                              ) from None
        self.dims, self.hop = self.summary["dims"], self.summary["hop"]
        self.signal = SIGNALS.get(self.dims)
        if self.signal is None:
            raise RunnerError(f"{folder}: a tokenizer of {self.dims} spatial axes; the runner codes audio (1) and "
                              "images (2)")
        self.sample_rate = self.summary.get("sample_rate")
        self.codebook_size = self.summary["codebook_size"]
        self.ratio = [self.hop // d for d in self.summary["downsample"]]  # frames per hop, per level

    # ------------------------------------------------------------ arrays
    def encode(self, x: np.ndarray, sample_rate: int | None = None) -> list[np.ndarray]:
        """Audio (T,) at the tokenizer's rate (as it is: no level) or an image (C, H, W) -> int64 codes per level,
        top first. Audio goes in the canonical blocks of streaming.py, as `Tokenizer.encode_long`."""
        return self.signal.encode(self, self._checked_input(x, sample_rate))

    def decode(self, levels: list[np.ndarray], size=None, postfilter: bool = True) -> np.ndarray:
        """Codes per level (top first) -> audio (T,) trimmed to `size`, through the postfilter graph if there is
        one and `postfilter`; or an image (C, H, W) cut to `size` (H, W). Audio in canonical blocks."""
        return self.signal.decode(self, self._checked_codes(levels), size, postfilter)

    # ------------------------------------------------------------ files
    def encode_file(self, path: str | os.PathLike, out: str | os.PathLike, as_is: bool = False) -> Path:
        """An audio file or PNG -> token file `out` (.npy, or .npz for two levels) and its sidecar; returns the
        sidecar's path. `as_is`: audio at its own level (vqtok encode --as-is)."""
        path, out = Path(path), Path(out)
        want = ".npy" if len(self.ratio) == 1 else ".npz"
        if out.suffix != want:
            raise RunnerError(f"{out}: a {len(self.ratio)}-level tokenizer writes {want} files")
        if not path.is_file():
            raise RunnerError(f"{path}: no such file")
        x, source = self.signal.read(self, path, as_is)
        return self.write_codes(out, self.encode(x), source)

    def write_codes(self, out: Path, levels: list[np.ndarray], source: dict) -> Path:
        """The token file and its sidecar, as tokenizer/codes.write_codes writes them."""
        arrays = [np.ascontiguousarray(c.astype(np.int16 if k <= 32768 else np.int32))
                  for c, k in zip(levels, self.codebook_size)]
        buffer = io.BytesIO()
        if len(arrays) == 1:
            np.save(buffer, arrays[0], allow_pickle=False)
        else:
            np.savez(buffer, **dict(zip(self.level_names, arrays)))
        atomic_write(out, buffer.getvalue())
        meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "vqtok_version": self.version,
                "tokenizer": self.summary,
                "levels": [{"name": n, "shape": list(a.shape), "dtype": str(a.dtype)}
                           for n, a in zip(self.level_names, arrays)],
                "source": source, "label": None, "array_sha256": hashlib.sha256(buffer.getvalue()).hexdigest()}
        side = out.with_name(out.name + ".json")
        atomic_write(side, json.dumps(meta, indent=1, sort_keys=True).encode())
        return side

    def read_codes(self, path: str | os.PathLike) -> tuple[list[np.ndarray], dict]:
        """A token file (ours or vqtok encode's) checked as tokenizer/codes.read_codes checks it."""
        path = Path(path)
        side = path.with_name(path.name + ".json")
        if not path.is_file() or not side.is_file():
            raise RunnerError(f"{path}: no such codes file with its sidecar {side.name}")
        try:
            meta = json.loads(side.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise RunnerError(f"{side}: unreadable sidecar ({' '.join(str(err).split())})") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise RunnerError(f"{side}: not a vqtok codes sidecar")
        made = meta.get("tokenizer", {})
        mine = self.summary
        if (made.get("fingerprint") != mine["fingerprint"]
                and made.get("codes_fingerprint") != mine["codes_fingerprint"]):
            raise RunnerError(f"{path}: made by tokenizer {made.get('fingerprint')}, these graphs are "
                              f"{mine['fingerprint']}; export the tokenizer that encoded it")
        blob = path.read_bytes()
        if meta.get("array_sha256") != hashlib.sha256(blob).hexdigest():
            raise RunnerError(f"{path}: the array does not match its sidecar (changed after encoding); re-encode it")
        try:
            loaded = np.load(path, allow_pickle=False)
            levels = [loaded] if isinstance(loaded, np.ndarray) else [loaded[n] for n in self.level_names]
        except (ValueError, OSError, KeyError) as err:
            raise RunnerError(f"{path}: not a readable codes array ({' '.join(str(err).split())})") from None
        return self._checked_codes(levels, path), meta

    def decode_file(self, path: str | os.PathLike, out: str | os.PathLike, postfilter: bool = True,
                    sample_rate: str = "model") -> Path:
        """A token file -> WAV (16-bit, at the model's rate, 'original' or a number of Hz) or PNG, as vqtok decode."""
        path, out = Path(path), Path(out)
        levels, meta = self.read_codes(path)
        atomic_write(out, self.signal.file_bytes(self, levels, meta.get("source", {}), postfilter, sample_rate))
        return out

    # ------------------------------------------------------------ checks
    def _checked_input(self, x, sample_rate: int | None) -> np.ndarray:
        x = np.asarray(x)
        if sample_rate is not None and self.sample_rate is not None and int(sample_rate) != self.sample_rate:
            raise RunnerError(f"audio at {sample_rate} Hz, but this tokenizer codes {self.sample_rate} Hz; resample it")
        if x.dtype.kind != "f":
            raise RunnerError(f"input of dtype {x.dtype}; pass float32 samples in [-1, 1] or pixels in [0, 1]")
        if x.ndim != self.signal.ndim:
            raise RunnerError(f"input of shape {x.shape}; pass {self.signal.what}")
        if not np.isfinite(x).all():
            raise RunnerError(f"input holds {int((~np.isfinite(x)).sum())} NaN or Inf values")
        return np.ascontiguousarray(x, np.float32)

    def _checked_codes(self, levels, where: Path | str = "codes") -> list[np.ndarray]:
        levels = [np.asarray(c) for c in levels]
        if len(levels) != len(self.ratio):
            raise RunnerError(f"{where}: codes for {len(levels)} level(s); this tokenizer has {len(self.ratio)}")
        for name, c, k in zip(self.level_names, levels, self.codebook_size):
            if c.dtype.kind not in "iu":
                raise RunnerError(f"{where}: level '{name}' has dtype {c.dtype}; codes are integers")
            if c.ndim not in (self.dims, self.dims + 1):  # + 1: a multi-codebook level, (codebooks, *S)
                raise RunnerError(f"{where}: level '{name}' has shape {c.shape}; expected {self.dims} axes")
            if c.size and (int(c.min()) < 0 or int(c.max()) >= k):
                raise RunnerError(f"{where}: level '{name}' holds ids {int(c.min())}..{int(c.max())}, outside the "
                                  f"{k}-code codebook")
        return [c.astype(np.int64) for c in levels]


# ------------------------------------------------------------------ command line
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Encode / decode files with graphs of vqtok export --onnx, "
                                                 "without torch.")
    sub = parser.add_subparsers(dest="verb", required=True)
    enc = sub.add_parser("encode", help="an audio file or PNG -> token file (.npy/.npz) + sidecar")
    enc.add_argument("onnx_dir")
    enc.add_argument("input")
    enc.add_argument("output")
    enc.add_argument("--as-is", action="store_true", help="audio at its own level (no gain)")
    dec = sub.add_parser("decode", help="a token file -> WAV or PNG")
    dec.add_argument("onnx_dir")
    dec.add_argument("input")
    dec.add_argument("output")
    dec.add_argument("--no-postfilter", action="store_true")
    dec.add_argument("--sample-rate", default="model", help="model, original or a number of Hz")
    args = parser.parse_args(argv)
    try:
        tok = OrtTokenizer(args.onnx_dir)
        if args.verb == "encode":
            side = tok.encode_file(args.input, args.output, as_is=args.as_is)
            print(f"{args.input} -> {args.output} ({side.name})")
        else:
            tok.decode_file(args.input, args.output, postfilter=not args.no_postfilter, sample_rate=args.sample_rate)
            print(f"{args.input} -> {args.output}")
    except RunnerError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
