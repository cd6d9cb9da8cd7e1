"""Audio files: strict mono loading and resampling, label/split rules from file names, and AudioFolder."""

from __future__ import annotations

import logging
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from vqtok.data.rules import RULE_NUM_CLASSES, get_rule
from vqtok.data.rules import hash_split  # noqa: F401 (data/images.py reads it here)
from vqtok.errors import VqtokError
from vqtok.files import atomic_write
from vqtok import speech_level

logger = logging.getLogger(__name__)

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")
SPLITS = ("train", "test", "all")
# Above this many files, preloading takes long enough to deserve a progress bar.
_PROGRESS_MIN_FILES = 200


def list_files(root: str | os.PathLike, extensions: tuple[str, ...]) -> list[Path]:
    """Files under ``root`` (recursive) whose extension is in ``extensions``, any case, sorted.

    A path to a single file is returned as a one-element list. Hidden files are skipped: they are
    mostly macOS ``._name.wav`` resource forks, which carry the extension but hold no audio or image.
    """
    root = Path(root)
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise VqtokError(f"{root}: no such file or folder; check the path")
    found = (
        p
        for p in root.rglob("*")
        if p.suffix.lower() in extensions
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
        and p.is_file()
    )
    # Sorted by the relative POSIX path so the order (and thus indices) is the same on every OS.
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def empty_split(root: Path, split: str, in_split: int, found: int, what: str, extensions) -> VqtokError:
    """The error for a dataset split without a usable file: none placed there, or all of them unreadable."""
    if in_split:
        problem = (f"none of the {in_split} {what} of split {split!r} is usable "
                   "(unreadable or unlabelled; see the warnings)")
    else:
        problem = f"no {'/'.join(extensions)} files for split {split!r} ({found} {what} in all)"
    return VqtokError(f"{root}: {problem}; point root at a folder of {what}")


def list_audio_files(root: str | os.PathLike) -> list[Path]:
    """Audio files (``AUDIO_EXTENSIONS``, any case) under ``root``, recursive and sorted."""
    return list_files(root, AUDIO_EXTENSIONS)


def relative_key(path: Path, root: Path) -> str:
    """The path relative to ``root`` in POSIX form (the file name when ``root`` is the file itself).

    Splits hash this key, so they survive moving the dataset folder or switching OS.
    """
    return path.name if path == root else path.relative_to(root).as_posix()


@dataclass(frozen=True)
class AudioInfo:
    """What the file held before conversion to mono at the target rate."""

    path: Path
    orig_sample_rate: int
    channels: int
    orig_frames: int
    duration_seconds: float


def check_audio_file(path: Path) -> None:
    """The checks before any audio is read: the file exists, is a file, is not empty, is not a cut WAV."""
    if not path.exists():
        raise VqtokError(f"{path}: audio file not found; check the path")
    if not path.is_file():
        raise VqtokError(f"{path}: not a file")
    if path.stat().st_size == 0:
        raise VqtokError(f"{path}: the file is empty (0 bytes); delete or re-export it")
    check_wav_complete(path)


def check_wav_complete(path: Path) -> None:
    """Raise if a RIFF/WAVE file's data chunk declares more bytes than the file holds (a cut download).

    libsndfile silently reads whatever part is there; a truncated file would then encode without
    complaint. Other formats, and streamed WAVs whose data size is left at 0 or 0xFFFFFFFF, pass.
    """
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] not in (b"RIFF", b"RIFX") or head[8:12] != b"WAVE":
            return
        endian = "<" if head[:4] == b"RIFF" else ">"
        pos = 12
        while pos + 8 <= size:
            f.seek(pos)
            chunk_id, chunk_size = struct.unpack(endian + "4sI", f.read(8))
            if chunk_id == b"data":
                if chunk_size in (0, 0xFFFFFFFF):
                    return
                available = size - (pos + 8)
                if chunk_size > available:
                    raise VqtokError(f"{path}: truncated WAV (the header declares {chunk_size} bytes of audio, "
                                     f"the file holds {available}); re-export or re-download it")
                return
            pos += 8 + chunk_size + (chunk_size & 1)  # chunks are word-aligned
        raise VqtokError(f"{path}: truncated WAV (no complete data chunk); re-export or re-download it")


# An MP3 encoder delays the signal by 576 samples and its decoder by 529 more, and pads the end to whole frames
# (LAME's technical FAQ). A Xing/Info tag with LAME's gapless fields lets the decoder (libsndfile's mpg123) cut
# both; a file without one decodes longer and later than its source, so the delay is cut here.
MP3_DELAY = 576 + 529


def mp3_span(path: Path, frames: int) -> tuple[int, int]:
    """(first frame, frame count) of the source signal in what libsndfile decodes from `path`: (0, frames) unless
    `path` is an MP3 whose first frame carries no gapless tag; then the start delay `MP3_DELAY` is skipped and
    the end cut so that no source sample is lost, leaving the length within one frame of the source's."""
    if path.suffix.lower() != ".mp3":
        return 0, frames
    with open(path, "rb") as f:
        head = f.read(10)
        start = 0
        if head[:3] == b"ID3" and len(head) == 10:  # ID3v2: its size is four 7-bit bytes
            start = 10 + sum((b & 0x7F) << (7 * (3 - i)) for i, b in enumerate(head[6:10]))
        f.seek(start)
        frame = f.read(200)
    if len(frame) < 40 or frame[0] != 0xFF or (frame[1] & 0xE0) != 0xE0 or ((frame[1] >> 1) & 3) != 1:
        return 0, frames  # not a layer III frame where one should start: leave it to libsndfile
    version, mono = (frame[1] >> 3) & 3, (frame[3] >> 6) == 3
    side = (17 if mono else 32) if version == 3 else (9 if mono else 17)
    if frame[4 + side: 8 + side] in (b"Xing", b"Info") or frame[36:40] == b"VBRI":
        return 0, frames  # gapless information: libsndfile already decodes the source's span
    per_frame = 1152 if version == 3 else 576
    # LAME pads the source (after its 576-sample delay) to whole frames and then adds one frame: so the decoded
    # tail after the source is between per_frame - 529 and 2 * per_frame - 530 samples; cut the least of it.
    keep = frames - MP3_DELAY - (per_frame - 529)
    return (MP3_DELAY, keep) if keep > 0 else (0, frames)


def load_audio(path: str | os.PathLike, sample_rate: int) -> tuple[np.ndarray, AudioInfo]:
    """Read an audio file as mono float32 (T,) at ``sample_rate``.

    Channels are averaged; other rates are converted with soxr (high quality). Any bit depth,
    channel count or rate that libsndfile reads is accepted.
    """
    path = Path(path)
    if sample_rate <= 0:
        raise VqtokError(f"sample_rate must be a positive number of Hz, got {sample_rate}")
    check_audio_file(path)
    try:
        data, orig_sr = sf.read(path, dtype="float32", always_2d=True)  # (frames, channels)
    except (sf.SoundFileError, RuntimeError, OSError, ValueError) as err:
        # One line: libsndfile messages may span lines.
        reason = " ".join(str(err).split())
        raise VqtokError(f"{path}: not readable as audio ({reason}); re-export it as WAV or FLAC") from None
    skip, frames = mp3_span(path, len(data))
    data = data[skip: skip + frames]  # (frames, channels)
    frames, channels = data.shape
    if frames == 0:
        raise VqtokError(f"{path}: holds no audio frames; delete or re-export it")
    bad = int(np.count_nonzero(~np.isfinite(data)))
    if bad:
        # Float WAVs can hold NaN/Inf; one of them would turn every loss of the batch into NaN.
        raise VqtokError(f"{path}: {bad} of {data.size} samples are NaN or Inf; re-export or remove the file")
    wav = data.mean(axis=1)  # (T,)
    if orig_sr != sample_rate:
        wav = resample(wav, orig_sr, sample_rate)
    info = AudioInfo(path, int(orig_sr), int(channels), int(frames), frames / orig_sr)
    return np.ascontiguousarray(wav, dtype=np.float32), info


def write_wav(path: str | os.PathLike, wave: torch.Tensor | np.ndarray, sample_rate: int) -> None:
    """Mono float waveform (T,) -> 16-bit PCM WAV (clipped to [-1, 1]), written atomically."""
    data = np.clip(np.asarray(wave.detach().cpu() if isinstance(wave, torch.Tensor) else wave), -1.0, 1.0)
    atomic_write(path, lambda tmp: sf.write(tmp, data, sample_rate, format="WAV", subtype="PCM_16"))


def resample(wav: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Resample mono (T,) to (ceil(T * target_sr / orig_sr),), exactly as ``librosa.resample(res_type="soxr_hq")``.

    librosa does just this (soxr HQ, then fix_length to the ceiling), but importing it loads scipy.signal
    and numba caches: 2-4 s per process, paid again by every CLI call and spawned DataLoader worker.
    """
    out = soxr.resample(wav, orig_sr, target_sr, quality="soxr_hq")  # (about T * ratio,)
    n = math.ceil(len(wav) * target_sr / orig_sr)
    if len(out) < n:
        out = np.pad(out, (0, n - len(out)))
    return out[:n].astype(np.float32, copy=False)


class AudioFolder(Dataset):
    """Mono clips from a folder of audio files, as fixed-length segments for training.

    Items: ``{"x": float32 (1, S), "mask": float32 (1, S), "label": int64 scalar, "index": int}`` with
    S = round(segment_seconds * sample_rate); ``mask`` is 1 on real samples and 0 on zero padding.
    ``segment_seconds=None`` gives whole clips (1, T) instead: use batch size 1.

    ``random_crop=True`` (training) draws the crop with torch's global RNG, so DataLoader worker
    seeding and a restored RNG state reproduce it; ``False`` (validation) takes the centred crop,
    identical at every call. Clips shorter than S start at 0 and are zero-padded.
    ``max_files`` keeps the first files of the split in sorted order (quick experiments, tests).
    ``level_db`` brings every clip to that speech level (gated RMS dBFS, as `vqtok encode` does for a tokenizer
    with a ``level_db``) when it is read.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        sample_rate: int,
        segment_seconds: float | None,
        split: str = "train",
        rule: str | None = "hash",
        random_crop: bool = True,
        max_files: int | None = None,
        preload: bool = True,
        level_db: float | None = None,
    ) -> None:
        if split not in SPLITS:
            raise VqtokError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
        if not sample_rate > 0:
            raise VqtokError(f"sample_rate must be a positive number of Hz, got {sample_rate}")
        if segment_seconds is not None and not segment_seconds > 0:
            raise VqtokError(f"segment_seconds must be positive or None (whole clips), got {segment_seconds}")
        if segment_seconds is not None and round(segment_seconds * sample_rate) < 1:
            raise VqtokError(f"segment_seconds={segment_seconds} is under one sample at {sample_rate} Hz")
        self.root = Path(root)
        self.sample_rate = int(sample_rate)
        self.segment_seconds = segment_seconds
        self.split = split
        self.rule = "hash" if rule is None else rule
        self.random_crop = random_crop
        self.preload = preload
        self.level_db = level_db
        rule_fn = get_rule(self.rule)
        self.num_classes = RULE_NUM_CLASSES[self.rule]

        # Place every file by name before opening any, so the other split's files are never read.
        candidates: list[tuple[Path, int]] = []
        found = list_audio_files(self.root)
        for path in found:
            key = relative_key(path, self.root)
            try:
                label, file_split = rule_fn(key)
            except ValueError as err:
                logger.warning("skipping %s: rule %r cannot place it (%s)", path, self.rule, err)
                continue
            if split in ("all", file_split):
                candidates.append((path, label))
        if max_files is not None:
            candidates = candidates[:max_files]

        self.files: list[Path] = []
        self.labels: list[int] = []
        self.durations: list[float] = []  # seconds, of the file as stored
        self._clips: list[np.ndarray] = []  # preloaded (T,) float32 at sample_rate
        quiet = len(candidates) <= _PROGRESS_MIN_FILES
        bar = tqdm(candidates, desc=f"loading {self.root.name}", unit="file", disable=quiet)
        for path, label in bar:
            try:
                duration = self._scan(path)
            except VqtokError as err:
                # Warned once here and dropped, so a training run never meets this file again.
                logger.warning("skipping %s", err)
                continue
            self.files.append(path)
            self.labels.append(label)
            self.durations.append(duration)
        if not self.files:
            raise empty_split(self.root, split, len(candidates), len(found), "audio files", AUDIO_EXTENSIONS)

    def _scan(self, path: Path) -> float:
        """Check one file and return its duration in seconds; with preload, decode and keep it."""
        if self.preload:
            wav, info = load_audio(path, self.sample_rate)
            self._clips.append(self._to_level(wav))
            return info.duration_seconds
        # Header only: the samples (and their NaN check) are read at __getitem__ time.
        try:
            info = sf.info(path)
        except (sf.SoundFileError, RuntimeError, OSError, ValueError) as err:
            raise VqtokError(f"{path}: not readable as audio ({' '.join(str(err).split())})") from None
        if info.frames <= 0:
            raise VqtokError(f"{path}: holds no audio frames")
        return info.frames / info.samplerate

    @property
    def segment_samples(self) -> int | None:
        """S, the length of every item's ``x``; None for whole clips."""
        if self.segment_seconds is None:
            return None
        return round(self.segment_seconds * self.sample_rate)

    def __len__(self) -> int:
        return len(self.files)

    def clip(self, index: int) -> np.ndarray:
        """The whole clip ``index``, mono float32 (T,) at ``sample_rate``."""
        if self.preload:
            return self._clips[index]
        return self._to_level(load_audio(self.files[index], self.sample_rate)[0])

    def _to_level(self, wav: np.ndarray) -> np.ndarray:
        if self.level_db is None:
            return wav
        return speech_level.to_level(wav, self.sample_rate, self.level_db)[0]

    def __getitem__(self, index: int) -> dict:
        wav = torch.from_numpy(self.clip(index))  # (T,)
        size = self.segment_samples
        if size is None:
            x = wav.clone()
            mask = torch.ones_like(x)
        elif len(wav) >= size:
            if self.random_crop:
                start = int(torch.randint(0, len(wav) - size + 1, ()))
            else:
                start = (len(wav) - size) // 2
            x = wav[start : start + size].clone()  # (S,); a copy so a caller's in-place edit spares the cache
            mask = torch.ones(size)
        else:
            x = torch.zeros(size)
            x[: len(wav)] = wav
            mask = torch.zeros(size)
            mask[: len(wav)] = 1.0
        return {
            "x": x.unsqueeze(0),  # (1, S)
            "mask": mask.unsqueeze(0),  # (1, S)
            "label": torch.tensor(self.labels[index], dtype=torch.int64),
            "index": index,
        }

    def __repr__(self) -> str:
        seg = "whole clips" if self.segment_seconds is None else f"{self.segment_seconds} s segments"
        return (
            f"AudioFolder({str(self.root)!r}, split={self.split!r}, rule={self.rule!r}, {len(self)} files, "
            f"{sum(self.durations) / 60:.1f} min, {self.sample_rate} Hz, {seg})"
        )



class ConcatClips(Dataset):
    """Training crops filled with several clips separated by random silences (all samples real).

    Short, silence-trimmed clips (FSDD's are mostly under 0.5 s) otherwise give crops that are mostly
    masked padding, and a codec that never sees silence; evaluation strings and real speech have both.
    Item i starts inside clip i at a random offset, then random clips follow after gaps of
    0..max_gap seconds. Randomness comes from torch's global RNG (restored on resume).
    Items: ``{"x": (1, S), "mask": ones (1, S), "label": label of clip i, "index": i}``.
    """

    def __init__(self, base: AudioFolder, max_gap_seconds: float = 0.2) -> None:
        if base.segment_samples is None:
            raise VqtokError("ConcatClips needs an AudioFolder with segment_seconds set")
        self.base = base
        self.size = base.segment_samples
        self.max_gap = round(max_gap_seconds * base.sample_rate)
        self.num_classes = base.num_classes
        self.labels = base.labels

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> dict:
        x = torch.zeros(self.size)
        first = torch.from_numpy(self.base.clip(index))
        start = int(torch.randint(0, len(first), ()))
        piece = first[start : start + self.size]
        x[: len(piece)] = piece
        pos = len(piece)
        while pos < self.size:
            pos += int(torch.randint(0, self.max_gap + 1, ()))
            if pos >= self.size:
                break
            clip = torch.from_numpy(self.base.clip(int(torch.randint(0, len(self.base), ()))))
            piece = clip[: self.size - pos]
            x[pos : pos + len(piece)] = piece
            pos += len(piece)
        return {
            "x": x.unsqueeze(0),
            "mask": torch.ones(1, self.size),
            "label": torch.tensor(self.base.labels[index], dtype=torch.int64),
            "index": index,
        }


class RandomGain(Dataset):
    """Each item's ``x`` scaled by a random gain, uniform in [-gain_db, +gain_db] dB (torch's global RNG, drawn
    after the item's own draws), so that quiet and loud speech are both well covered."""

    def __init__(self, base: Dataset, gain_db: float) -> None:
        if not gain_db > 0:
            raise VqtokError(f"gain_db must be positive, got {gain_db}")
        self.base = base
        self.gain_db = gain_db
        self.num_classes = getattr(base, "num_classes", None)
        self.labels = getattr(base, "labels", None)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> dict:
        item = dict(self.base[index])
        item["x"] = item["x"] * 10 ** ((torch.rand(()) * 2 - 1) * self.gain_db / 20)
        return item
