"""The speech evaluation protocol: which audio a codec is scored on (FSDD digit strings, pieces of a folder) and how."""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from vqtok import metrics  # noqa: E402
from vqtok.data.audio import list_audio_files, load_audio  # noqa: E402
from vqtok.errors import VqtokError  # noqa: E402

TEST_TAKES = range(5)  # FSDD's official split: takes 0-4 are the test set.
N_DIGITS = 10
MAX_PIECE_SECONDS = 8.0
# Codec delays found here are under 30 ms (Codec 2 ~20 ms, Opus ~6.5 ms); 0.2 s leaves a wide margin.
MAX_SHIFT_SECONDS = 0.2
PESQ_RATES = {"wb": (16000,), "nb": (8000, 16000)}  # P.862.2 (wide band) is defined at 16 kHz only


@dataclass
class EvalPiece:
    """One evaluation signal: ``audio (T,)`` float32 at the protocol's sample rate, and where it came from.

    Digit strings fill ``speaker``, ``digits`` and ``files`` (the FSDD clips in order); pieces of a folder
    fill ``files`` with their one source file (relative to the folder) and ``start`` (seconds into it).
    """

    audio: np.ndarray
    speaker: str = ""
    digits: list[int] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    start: float = 0.0


def fsdd_speakers(fsdd_root: Path) -> list[str]:
    """Sorted speaker names found among the ``{digit}_{speaker}_{take}.wav`` files."""
    speakers = {p.stem.split("_")[1] for p in Path(fsdd_root).glob("*_*_*.wav")}
    if not speakers:
        raise VqtokError(f"{fsdd_root}: no FSDD recordings named {{digit}}_{{speaker}}_{{take}}.wav; "
                         "pass the 'recordings' folder of the Free Spoken Digit Dataset")
    return sorted(speakers)


def make_eval_strings(fsdd_root: str | Path, n: int = 50, digits_per_string: int = 5, seed: int = 0,
                      silence: float = 0.1, sample_rate: int = 8000,
                      speakers: Sequence[str] | None = None) -> list[EvalPiece]:
    """The fixed digit-string set: ``n`` strings of ``digits_per_string`` digits, one speaker each.

    Exact procedure (so any implementation reproduces the same audio):

    1. ``speakers`` = sorted speaker names in ``fsdd_root`` (george, jackson, lucas, nicolas, yweweler),
       or the sorted names given (each must be in the folder): ``speakers=["nicolas"]`` scores only the
       speaker that the fsdd_speaker rule keeps out of the digit tokenizer's training.
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
    found = fsdd_speakers(root)
    if speakers:
        unknown = sorted(set(speakers) - set(found))
        if unknown:
            raise VqtokError(f"{root}: no recordings of speaker(s) {', '.join(unknown)}; "
                             f"the folder has {', '.join(found)}")
        found = sorted(set(speakers))
    rng = np.random.default_rng(seed)
    gap = np.zeros(int(round(silence * sample_rate)), dtype=np.float32)
    strings = []
    for i in range(n):
        speaker = found[i % len(found)]
        digits = rng.integers(0, N_DIGITS, digits_per_string)
        takes = rng.integers(0, len(TEST_TAKES), digits_per_string)
        files = [f"{d}_{speaker}_{t}.wav" for d, t in zip(digits, takes)]
        pieces = [gap]
        for name in files:
            if not (root / name).is_file():
                raise VqtokError(f"{root / name}: missing FSDD test recording (takes 0-4 of every digit are needed)")
            pieces += [load_audio(root / name, sample_rate)[0], gap]
        strings.append(EvalPiece(np.concatenate(pieces), speaker, [int(d) for d in digits], files))
    return strings


def cut_bounds(length: int, max_length: int) -> list[tuple[int, int]]:
    """``(start, end)`` of the fewest equal pieces of at most ``max_length`` samples covering ``length``.

    Equal pieces rather than full ones and a short remainder: a remainder of a few hundred ms would
    count as much as 8 s in the mean and is too short for STOI's 384 ms analysis window.
    """
    count = max(1, math.ceil(length / max_length))
    edges = [round(i * length / count) for i in range(count + 1)]
    return list(zip(edges[:-1], edges[1:]))


def make_folder_pieces(root: str | Path, sample_rate: int, max_seconds: float = MAX_PIECE_SECONDS,
                       n: int | None = None) -> list[EvalPiece]:
    """Every audio file under ``root`` (sorted, recursive), at ``sample_rate``, cut by :func:`cut_bounds`.

    With ``n``, ``n`` pieces spread evenly over the sorted list (piece ``floor(i * total / n)``), so a
    quick run still hears every speaker of a folder laid out speaker by speaker.
    """
    root = Path(root)
    pieces = []
    for path in list_audio_files(root):
        audio, _ = load_audio(path, sample_rate)  # (T,)
        name = path.relative_to(root).as_posix() if path != root else path.name
        for start, end in cut_bounds(len(audio), round(max_seconds * sample_rate)):
            pieces.append(EvalPiece(audio[start:end].copy(), files=[name], start=start / sample_rate))
    if not pieces:
        raise VqtokError(f"{root}: no audio files; pass a folder of speech recordings")
    if n is not None and n < len(pieces):
        pieces = [pieces[i * len(pieces) // n] for i in range(n)]
    return pieces


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


def pesq_score(estimate: np.ndarray, reference: np.ndarray, sample_rate: int, mode: str) -> float:
    """PESQ on the MOS-LQO scale: ``mode`` "nb" (P.862, at 8 or 16 kHz) or "wb" (P.862.2, at 16 kHz)."""
    if sample_rate not in PESQ_RATES[mode]:
        raise VqtokError(f"PESQ-{mode} is defined at {' or '.join(map(str, PESQ_RATES[mode]))} Hz, "
                         f"not {sample_rate} Hz")
    if mode == "nb":
        return metrics.pesq_nb(estimate, reference, sample_rate)
    try:
        from pesq import pesq as _pesq
    except ImportError as err:
        raise VqtokError(f"PESQ needs the pesq package: {metrics.EVAL_EXTRA_HINT}") from err
    n = min(len(estimate), len(reference))
    return float(_pesq(sample_rate, np.asarray(reference[:n], np.float64), np.asarray(estimate[:n], np.float64), "wb"))


def defined_pesq_modes(sample_rate: int) -> tuple[str, ...]:
    """The PESQ variants defined at ``sample_rate``: ("wb", "nb") at 16 kHz, ("nb",) at 8 kHz, none elsewhere."""
    return tuple(mode for mode in ("wb", "nb") if sample_rate in PESQ_RATES[mode])


def evaluate_codec(fn: Callable[[np.ndarray], np.ndarray], pieces: Sequence[EvalPiece], sample_rate: int = 8000,
                   pesq: Sequence[str] | None = None, max_shift: int | None = None) -> dict:
    """Run the round trip ``fn(audio (T,)) -> audio (T',)`` on every piece and score it.

    The output is trimmed or zero-padded to the input length, then its delay (within +-``max_shift``
    samples, default 0.2 s, found by cross-correlation) is compensated, and every metric is computed
    on the aligned pair: ``si_snr`` (dB), ``stoi``, ``pesq_wb`` / ``pesq_nb`` for each mode in ``pesq``
    (default: those defined at ``sample_rate``; ``()`` skips PESQ, the slowest metric) and
    ``log_mel_distance``. Aligning matters for classical codecs: Codec 2 delays its output by about
    20 ms, which alone costs about 0.15 STOI (STOI compares 384 ms segments frame by frame). Returns
    each metric's mean under its name and the per-piece values under ``per_piece[name]``.
    """
    modes = defined_pesq_modes(sample_rate) if pesq is None else tuple(pesq)
    shift = round(MAX_SHIFT_SECONDS * sample_rate) if max_shift is None else max_shift
    names = ["si_snr", "stoi"] + [f"pesq_{m}" for m in modes] + ["log_mel_distance"]
    per_piece: dict[str, list[float]] = {name: [] for name in names}
    for piece in pieces:
        ref = piece.audio
        est = compensate_delay(fit_length(fn(ref), len(ref)), ref, shift)
        per_piece["si_snr"].append(metrics.si_snr(est, ref))
        per_piece["stoi"].append(metrics.stoi(est, ref, sample_rate))
        for mode in modes:
            per_piece[f"pesq_{mode}"].append(pesq_score(est, ref, sample_rate, mode))
        per_piece["log_mel_distance"].append(metrics.log_mel_distance(est, ref, sample_rate))
    result: dict = {name: float(np.mean(values)) for name, values in per_piece.items()}
    result["per_piece"] = per_piece
    return result
