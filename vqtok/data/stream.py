"""Audio read in pieces: mono at the target rate in bounded memory, identical to `load_audio`, strict checks.

`AudioStream(path, sample_rate)` checks the file on opening (missing, empty, not audio, a WAV whose
header promises more data than the file holds) and then yields the signal piece by piece:
channels averaged and resampled with soxr's streaming resampler, which gives the same samples as the
one-shot `resample` that `load_audio` uses, whatever the piece size. NaN/Inf samples raise while reading.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from vqtok.data.audio import AudioInfo, check_audio_file, mp3_span
from vqtok.errors import VqtokError


class AudioStream:
    """An audio file opened for piecewise reading as mono float32 at `sample_rate`.

    `info` describes the file as stored; `length` is the number of samples `pieces()` yields in all,
    ceil(frames * sample_rate / file rate), as `load_audio` returns.
    """

    def __init__(self, path: str | os.PathLike, sample_rate: int) -> None:
        path = Path(path)
        self.path = path
        self.sample_rate = int(sample_rate)
        check_audio_file(path)
        try:
            info = sf.info(str(path))
        except (sf.SoundFileError, RuntimeError, OSError, ValueError) as err:
            reason = " ".join(str(err).split())
            raise VqtokError(f"{path}: not readable as audio ({reason}); re-export it as WAV or FLAC") from None
        if info.frames <= 0:
            raise VqtokError(f"{path}: holds no audio frames; delete or re-export it")
        self.skip, frames = mp3_span(path, info.frames)  # the source's span of an MP3 without gapless tag
        self.info = AudioInfo(path, int(info.samplerate), int(info.channels), frames, frames / info.samplerate)
        self.length = math.ceil(frames * self.sample_rate / info.samplerate)

    def pieces(self, frames_per_piece: int = 1 << 16) -> Iterator[np.ndarray]:
        """Mono float32 pieces at the target rate; their concatenation has `length` samples."""
        info = self.info
        resampler = None
        if info.orig_sample_rate != self.sample_rate:
            resampler = soxr.ResampleStream(info.orig_sample_rate, self.sample_rate, 1, dtype="float32", quality="HQ")
        produced = 0
        read = 0
        try:
            with sf.SoundFile(str(self.path)) as f:
                skip = self.skip  # read with the first piece, not seeked: libmpg123 needs the frames before
                while True:
                    data = f.read(frames_per_piece + skip, dtype="float32", always_2d=True)[skip:]  # (n, channels)
                    data, skip = data[: info.orig_frames - read], 0
                    read += len(data)
                    last = len(data) < frames_per_piece or read >= info.orig_frames
                    finite = np.isfinite(data)
                    if not finite.all():
                        bad = int(finite.size - np.count_nonzero(finite))
                        at = (read - len(data) + int(np.argmin(finite.all(axis=1)))) / info.orig_sample_rate
                        raise VqtokError(f"{self.path}: {bad} samples from {at:.2f} s on are NaN or Inf; "
                                         "re-export or remove the file")
                    mono = data.mean(axis=1) if len(data) else np.zeros(0, np.float32)
                    if resampler is not None:
                        mono = resampler.resample_chunk(mono, last=last)
                    mono = mono[: self.length - produced]
                    produced += len(mono)
                    if len(mono):
                        yield np.ascontiguousarray(mono, dtype=np.float32)
                    if last:
                        break
        except (sf.SoundFileError, RuntimeError) as err:
            reason = " ".join(str(err).split())
            raise VqtokError(f"{self.path}: reading failed ({reason}); re-export it as WAV or FLAC") from None
        if produced < self.length:  # soxr's flush can fall a sample short; resample() pads the same way
            yield np.zeros(self.length - produced, dtype=np.float32)

    def read(self) -> np.ndarray:
        """The whole signal (T,) at once."""
        parts = list(self.pieces())
        return np.concatenate(parts) if parts else np.zeros(0, np.float32)
