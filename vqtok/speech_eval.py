"""The speech evaluation protocol: fixed FSDD digit strings and the metrics of a codec round trip."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from vqtok import metrics
from vqtok.errors import VqtokError

TEST_TAKES = range(5)  # FSDD's official split: takes 0-4 are the test set.
N_DIGITS = 10


@dataclass
class EvalString:
    """One evaluation utterance: ``audio (T,)`` float32 at the protocol's sample rate."""

    audio: np.ndarray
    speaker: str
    digits: list[int]
    files: list[str] = field(default_factory=list)


def fsdd_speakers(fsdd_root: Path) -> list[str]:
    """Sorted speaker names found among the ``{digit}_{speaker}_{take}.wav`` files."""
    speakers = {p.stem.split("_")[1] for p in Path(fsdd_root).glob("*_*_*.wav")}
    if not speakers:
        raise VqtokError(f"{fsdd_root}: no FSDD recordings named {{digit}}_{{speaker}}_{{take}}.wav; "
                         "pass the 'recordings' folder of the Free Spoken Digit Dataset")
    return sorted(speakers)


def load_clip(path: Path, sample_rate: int) -> np.ndarray:
    """Read a mono clip as float32 in [-1, 1], resampled to ``sample_rate`` if needed."""
    if not path.is_file():
        raise VqtokError(f"{path}: missing FSDD test recording (takes 0-4 of every digit are needed)")
    audio, rate = sf.read(path, dtype="float32", always_2d=True)
    audio = audio.mean(axis=1)
    if rate != sample_rate:
        import librosa

        audio = librosa.resample(audio, orig_sr=rate, target_sr=sample_rate)
    return audio.astype(np.float32)


def make_eval_strings(fsdd_root: str | Path, n: int = 50, digits_per_string: int = 5, seed: int = 0,
                      silence: float = 0.1, sample_rate: int = 8000) -> list[EvalString]:
    """The fixed evaluation set: ``n`` strings of ``digits_per_string`` digits, one speaker each.

    Exact procedure (so any implementation reproduces the same audio):

    1. ``speakers`` = sorted speaker names in ``fsdd_root`` (george, jackson, lucas, nicolas, yweweler).
    2. ``rng = numpy.random.default_rng(seed)``. For string ``i = 0 .. n-1``: the speaker is
       ``speakers[i % len(speakers)]``; then ``digits = rng.integers(0, 10, digits_per_string)``
       and ``takes = rng.integers(0, 5, digits_per_string)`` are drawn, in that order.
    3. Each digit is the test recording ``{digit}_{speaker}_{take}.wav`` (takes 0-4 are FSDD's test
       split), read as float32 and resampled to ``sample_rate`` if it differs from the file's 8 kHz.
    4. The string is ``silence`` seconds of zeros, then each clip followed by ``silence`` seconds
       of zeros: zeros lead, separate and trail the digits, and the trailing gap leaves room for a
       codec's delay. No level normalisation: the recordings keep their own levels.
    """
    root = Path(fsdd_root)
    speakers = fsdd_speakers(root)
    rng = np.random.default_rng(seed)
    gap = np.zeros(int(round(silence * sample_rate)), dtype=np.float32)
    strings = []
    for i in range(n):
        speaker = speakers[i % len(speakers)]
        digits = rng.integers(0, N_DIGITS, digits_per_string)
        takes = rng.integers(0, len(TEST_TAKES), digits_per_string)
        files = [f"{d}_{speaker}_{t}.wav" for d, t in zip(digits, takes)]
        pieces = [gap]
        for name in files:
            pieces += [load_clip(root / name, sample_rate), gap]
        strings.append(EvalString(np.concatenate(pieces), speaker, [int(d) for d in digits], files))
    return strings


def fit_length(audio: np.ndarray, length: int) -> np.ndarray:
    """Trim or zero-pad a 1-D signal to ``length`` samples."""
    audio = np.asarray(audio, dtype=np.float32).reshape(-1)
    if len(audio) >= length:
        return audio[:length]
    return np.pad(audio, (0, length - len(audio)))


def compensate_delay(estimate: np.ndarray, reference: np.ndarray, max_shift: int) -> np.ndarray:
    """Shift ``estimate`` by the delay :func:`vqtok.metrics.find_delay` finds; same length as before.

    Samples shifted out are dropped and the gap is zero-filled, so the result lines up with
    ``reference`` sample for sample.
    """
    delay = metrics.find_delay(estimate, reference, max_shift)
    if delay >= 0:
        return fit_length(estimate[delay:], len(estimate))
    return fit_length(np.concatenate([np.zeros(-delay, np.float32), estimate]), len(estimate))


def evaluate_codec(fn: Callable[[np.ndarray], np.ndarray], strings: list[EvalString],
                   sample_rate: int = 8000, with_pesq: bool = True, max_shift: int = 1600) -> dict:
    """Run the round trip ``fn(audio (T,)) -> audio (T',)`` on every string and score it.

    The output is trimmed or zero-padded to the input length, then its delay (within
    +-``max_shift`` samples, found by cross-correlation) is compensated, and every metric is
    computed on the aligned pair: ``si_snr`` (dB), ``stoi``, ``pesq_nb`` (skipped if ``with_pesq``
    is False) and ``log_mel_distance``. Aligning matters for classical codecs: Codec 2 delays its
    output by about 20 ms, which alone costs about 0.15 STOI (STOI compares 384 ms segments frame
    by frame). Returns each metric's mean under its name and the per-string values under
    ``per_string[name]``.
    """
    names = ["si_snr", "stoi"] + (["pesq_nb"] if with_pesq else []) + ["log_mel_distance"]
    per_string: dict[str, list[float]] = {name: [] for name in names}
    for string in strings:
        ref = string.audio
        est = compensate_delay(fit_length(fn(ref), len(ref)), ref, max_shift)
        per_string["si_snr"].append(metrics.si_snr(est, ref))
        per_string["stoi"].append(metrics.stoi(est, ref, sample_rate))
        if with_pesq:
            per_string["pesq_nb"].append(metrics.pesq_nb(est, ref, sample_rate))
        per_string["log_mel_distance"].append(metrics.log_mel_distance(est, ref, sample_rate))
    result: dict = {name: float(np.mean(values)) for name, values in per_string.items()}
    result["per_string"] = per_string
    return result
