"""The encode/decode contract every entry point shares: prepare an input, route it, encode; decode, postfilter,
undo the gain, resample, trim.

Encoding. `Codec.open(path)` reads and checks a file: audio is mixed to mono and resampled to the tokenizer's
rate (read in pieces, data/stream.py) and brought to the tokenizer's speech level `level_db` (speech_level.py), the
gain recorded in the input's `source`; an image is read at its own size with the tokenizer's channel count.
`Codec.prepare(x)` does the same for a signal already in memory. `Codec.encode(items)` routes them: a file
longer than one canonical block (`tok.block_frames` hops) is encoded block by block as it is read (bounded
memory; one pass to measure its level, a second to encode), everything else `batch_size` at a time
(`Tokenizer.encode_batch`). The codes are identical whichever route and batch size is taken (streaming.py).

Decoding. `Codec.decode(levels, source)` is the inverse: block-wise decode trimmed to the recorded length
(through the tokenizer's postfilter unless asked not to), the recorded gain undone, then resampled to the rate
asked for ('model', 'original' restoring the file's rate and exact frame count, or a number of Hz); images are
decoded at their recorded size. `write_decoded` writes the result as 16-bit WAV or 8-bit PNG.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from vqtok.data.audio import AUDIO_EXTENSIONS, resample, write_wav
from vqtok.data.images import IMAGE_EXTENSIONS, image_channels, load_image
from vqtok.data.stream import AudioStream
from vqtok.errors import VqtokError
from vqtok.plots import save_png
from vqtok.tokenizer import speech_level, streaming

logger = logging.getLogger(__name__)


@dataclass
class Prepared:
    """An input ready to encode.

    `data`: audio (T,) float32 at the tokenizer's rate and level, an image (C, H, W) in [0, 1], or an
    `AudioStream` for a file long enough to be encoded block-wise (levelled as it is encoded). `source` is what
    the token file's sidecar records about the input (tokenizer/codes.py), `gain_db` included once known.
    """

    data: Any
    source: dict[str, Any]

    @property
    def streamed(self) -> bool:
        return isinstance(self.data, AudioStream)


@dataclass
class Decoded:
    """Codes decoded back: audio (T,) float32 at `sample_rate`, or an image (C, H, W) (`sample_rate` None)."""

    data: np.ndarray
    sample_rate: int | None = None


class Codec:
    """A tokenizer with the rules of turning inputs into codes and back (see the module doc).

    `at_level=False` encodes audio at its own level (no gain); `chunk_seconds` is how much of a long file is read
    and handed over at a time (None: all of it), never changing the codes; `batch_size` short inputs are encoded
    together.
    """

    def __init__(self, tok, at_level: bool = True, chunk_seconds: float | None = 10.0, batch_size: int = 1,
                 progress: bool = False):
        self.tok = tok
        self.level_db = tok.level_db if at_level else None  # the speech level audio is brought to (None: as is)
        self.chunk_seconds = chunk_seconds or None
        self.batch_size = max(1, batch_size)
        self.progress = progress

    # ------------------------------------------------------------ encoding
    def open(self, path: Path) -> Prepared:
        """A file read and checked for this tokenizer; a VqtokError naming the file on any problem."""
        tok = self.tok
        if tok.dims == 1:
            if path.suffix.lower() in IMAGE_EXTENSIONS:
                raise VqtokError(f"{path}: an image, but this is an audio tokenizer")
            stream = AudioStream(path, tok.sample_rate)
            info = stream.info
            if stream.length < tok.hop:
                raise VqtokError(
                    f"{path}: {stream.length} samples at {tok.sample_rate} Hz "
                    f"({1000 * stream.length / tok.sample_rate:.1f} ms) is shorter than one frame of this tokenizer "
                    f"({tok.hop} samples, {1000 * tok.hop / tok.sample_rate:.1f} ms); nothing to encode")
            source = {"kind": "audio", "path": str(path), "length": stream.length, "sample_rate": tok.sample_rate,
                      "orig_sample_rate": info.orig_sample_rate, "channels": info.channels,
                      "orig_frames": info.orig_frames, "duration": info.duration_seconds}
            if stream.length > tok.block_frames * tok.hop:
                return Prepared(stream, source)
            return self._levelled(stream.read(), source)
        if path.suffix.lower() in AUDIO_EXTENSIONS:
            raise VqtokError(f"{path}: an audio file, but this is an image tokenizer")
        channels = tok.config.in_channels
        stored = image_channels(path)
        if stored != channels:
            # An RGB photo given to a grey tokenizer (or the reverse) encodes, but decodes as what the tokenizer
            # makes: say so rather than hand back a different picture without a word.
            logger.warning("%s: %s pixels, converted to %s for this %d-channel tokenizer; it decodes as %s", path,
                           _CHANNEL_NAMES[stored], _CHANNEL_NAMES[channels], channels, _CHANNEL_NAMES[channels])
        image = load_image(path, None, channels=channels)  # (C, H, W) in [0, 1]
        h, w = image.shape[1:]
        if min(h, w) < tok.hop:
            raise VqtokError(f"{path}: {h}x{w} pixels is smaller than one code of this tokenizer ({tok.hop}x{tok.hop})")
        return Prepared(image, {"kind": "image", "path": str(path), "size": [int(h), int(w)],
                                "channels": int(image.shape[0])})

    def prepare(self, x: np.ndarray | torch.Tensor) -> Prepared:
        """A signal in memory: mono audio (T,) at the tokenizer's rate (brought to its level) or an image (C, H, W)."""
        if self.tok.dims == 1:
            audio = self.tok._mono(x).numpy()
            return self._levelled(audio, {"kind": "audio", "path": None, "length": len(audio)})
        image = np.ascontiguousarray(x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else x)
        return Prepared(image, {"kind": "image", "path": None, "size": list(image.shape[1:])})

    def _levelled(self, audio: np.ndarray, source: dict[str, Any], clip_db: float | None = None) -> Prepared:
        """`audio` (T,) at `level_db` from the clip's level `clip_db` (None: measured on `audio`); gain into source."""
        if self.level_db is None:
            return Prepared(audio, source)
        audio, source["gain_db"] = speech_level.to_level(audio, self.tok.sample_rate, self.level_db, clip_db)
        return Prepared(audio, source)

    def encode(self, items: Sequence[Prepared]) -> list:
        """Codes per item (a tensor, or a list per level, top first), each exactly what it gives alone."""
        codes: list = [None] * len(items)
        short = [i for i, item in enumerate(items) if not item.streamed]
        for i, item in enumerate(items):
            if item.streamed:
                codes[i] = self._encode_stream(item)
        if short:
            batch = [torch.as_tensor(items[i].data) for i in short]
            for i, c in zip(short, self.tok.encode_batch(batch, batch_size=self.batch_size)):
                codes[i] = c
        return codes

    def _encode_stream(self, item: Prepared):
        """A long file block by block as it is read: the level measured over the whole file first."""
        tok, stream, source = self.tok, item.data, item.source
        rate = stream.info.orig_sample_rate
        frames = stream.info.orig_frames if not self.chunk_seconds else max(1, round(self.chunk_seconds * rate))
        pieces = stream.pieces(frames)
        if self.level_db is not None:
            meter = speech_level.LevelMeter(tok.sample_rate)
            for piece in stream.pieces(frames):
                meter.add(piece)
            clip_db = meter.level_db
            pieces = (self._levelled(piece, source, clip_db).data for piece in pieces)
        parts = []
        total = stream.length / tok.sample_rate
        with tqdm(total=round(total, 1), desc=stream.path.name, unit="s", leave=False, dynamic_ncols=True,
                  disable=not self.progress or total < 30) as bar:
            for part in streaming.stream_encode(tok, pieces):
                parts.append(part)
                bar.update(round(len(part[-1]) * tok.downsample[-1] / tok.sample_rate, 1))
        levels = [torch.from_numpy(c) for c in streaming.join_levels(parts, tok.levels)]
        return levels[0] if tok.levels == 1 else levels

    # ------------------------------------------------------------ decoding
    def decode(self, levels: Sequence[np.ndarray | torch.Tensor], source: dict[str, Any], sample_rate: str = "model",
               postfilter: bool = True) -> Decoded:
        """Codes per level (top first) back to the input `source` describes (a sidecar's record, or a `Prepared`'s).

        Audio: trimmed to `source["length"]`, its `gain_db` undone; `sample_rate` 'model', 'original' (the
        file's rate and exact frame count) or a number of Hz. Images: (C, H, W) at `source["size"]`, unclipped.
        """
        tok = self.tok
        levels = [torch.as_tensor(c) for c in levels]
        codes = levels if tok.levels > 1 else levels[0]
        with torch.no_grad():
            if tok.dims != 1:
                return Decoded(tok.decode(codes, size=tuple(source["size"])).cpu().numpy())  # (C, H, W)
            wav = tok.decode_long(codes, size=int(source["length"]), chunk_seconds=self.chunk_seconds,
                                  postfilter=postfilter)[0].cpu().numpy()  # (T,)
        wav = speech_level.undo_level(wav, source.get("gain_db", 0.0))
        rate = tok.sample_rate
        if sample_rate == "original":
            rate = int(source.get("orig_sample_rate", rate))
            if rate != tok.sample_rate:
                wav = resample(wav, tok.sample_rate, rate)
            n = int(source.get("orig_frames", len(wav)))
            wav = np.pad(wav, (0, max(0, n - len(wav))))[:n]
        elif sample_rate != "model":
            rate = int(sample_rate)
            if rate != tok.sample_rate:
                wav = resample(wav, tok.sample_rate, rate)
        return Decoded(wav, rate)

    def round_trip(self, x: np.ndarray | torch.Tensor, postfilter: bool = True) -> tuple[list, Decoded]:
        """A signal in memory (as `prepare` takes it) encoded and decoded back at its own level: (codes per level,
        top first; output)."""
        item = self.prepare(x)
        codes = self.encode([item])[0]
        levels = codes if isinstance(codes, list) else [codes]
        return levels, self.decode(levels, item.source, postfilter=postfilter)


_CHANNEL_NAMES = {1: "grey", 3: "RGB"}  # image_channels gives one of these


def write_decoded(out: Path, decoded: Decoded, what: Path | str = "") -> Path:
    """A decoded output to `out`: audio as 16-bit WAV (clipped to [-1, 1], with a warning naming `what` when it
    peaks above), an image as an 8-bit PNG."""
    if decoded.sample_rate is not None:
        wav = decoded.data
        peak = float(np.max(np.abs(wav))) if len(wav) else 0.0
        if peak > 1.0:
            logger.warning("%s: decoded audio peaks at %.2f; clipped to [-1, 1] for 16-bit WAV", what or out, peak)
        _write_file(out, lambda: write_wav(out, wav, decoded.sample_rate))
        return out
    pixels = np.round(np.clip(decoded.data, 0.0, 1.0) * 255).astype(np.uint8).transpose(1, 2, 0)  # (H, W, C)
    _write_file(out, lambda: save_png(pixels, out))
    return out


def _write_file(out: Path, write: Callable[[], None]) -> None:
    try:
        write()
    except OSError as err:
        raise VqtokError(f"{out}: cannot write ({err.strerror or err})") from None
