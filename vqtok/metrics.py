"""Evaluation metrics on 1-D numpy signals (SI-SNR, log-mel distance, STOI, PESQ) and on codes."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from vqtok.errors import VqtokError

EVAL_EXTRA_HINT = 'pip install "vqtok[eval]"'
# Floor for mel magnitudes before the log, as in DAC's mel distance (clamp_eps=1e-5).
LOG_CLAMP = 1e-5


def _as_1d(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 1:
        x = np.squeeze(x)
    if x.ndim != 1:
        raise ValueError(f"{name} must be a 1-D signal, got shape {np.shape(x)}")
    return x


def _common_length(estimate: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n = min(len(estimate), len(reference))
    return estimate[:n], reference[:n]


def find_delay(estimate: np.ndarray, reference: np.ndarray, max_shift: int) -> int:
    """Integer delay ``d`` (|d| <= max_shift) maximising sum_n estimate[n + d] * reference[n].

    A positive ``d`` means the estimate lags the reference by ``d`` samples. The cross-correlation
    is computed for all lags at once with a zero-padded FFT (O(T log T)).
    """
    estimate, reference = _as_1d(estimate, "estimate"), _as_1d(reference, "reference")
    n = len(estimate) + len(reference) - 1
    size = 1 << (n - 1).bit_length()
    xcorr = np.fft.irfft(np.fft.rfft(estimate, size) * np.conj(np.fft.rfft(reference, size)), size)
    # xcorr[k] holds lag k for k >= 0 and lag k - size for the wrapped negative lags.
    lags = np.arange(-max_shift, max_shift + 1)
    lags = lags[(lags < len(estimate)) & (-lags < len(reference))]
    return int(lags[np.argmax(xcorr[lags % size])])


def align_signals(estimate: np.ndarray, reference: np.ndarray, max_shift: int) -> tuple[np.ndarray, np.ndarray]:
    """Remove the delay found by :func:`find_delay`; returns the overlapping parts, equal in length."""
    delay = find_delay(estimate, reference, max_shift)
    if delay > 0:
        estimate = estimate[delay:]
    elif delay < 0:
        reference = reference[-delay:]
    return _common_length(estimate, reference)


def si_snr(estimate: np.ndarray, reference: np.ndarray, align: bool = False, max_shift: int = 1600) -> float:
    """Scale-invariant SNR in dB (Le Roux et al. 2019, "SDR - half-baked or well done?", eq. 3).

    Both signals are made zero-mean; the estimate is projected on the reference. With ``align=True``
    the integer delay within +-``max_shift`` samples (default 1600: 0.2 s at 8 kHz) that maximises
    the cross-correlation is compensated first, since classical codecs delay their output and
    SI-SNR would otherwise measure the delay, not the coding noise.
    """
    estimate, reference = _as_1d(estimate, "estimate"), _as_1d(reference, "reference")
    if align:
        estimate, reference = align_signals(estimate, reference, max_shift)
    else:
        estimate, reference = _common_length(estimate, reference)
    estimate = estimate - estimate.mean()
    reference = reference - reference.mean()
    eps = 1e-12  # identical inputs give ~120 dB above unit energy instead of dividing by 0
    target = (estimate @ reference) / (reference @ reference + eps) * reference
    noise = estimate - target
    return float(10 * np.log10((target @ target + eps) / (noise @ noise + eps)))


def mel_settings(sample_rate: int) -> dict[str, int]:
    """STFT/mel settings for :func:`log_mel_distance`: a ~32 ms window, hop = window/4.

    n_fft = 256 at 8 kHz, 512 at 16 kHz, 1024 at 24-48 kHz; n_mels = 64 at 8 kHz growing to 80
    (the usual speech setting) from 16 kHz, few enough that no mel filter is empty.
    """
    n_fft = 1 << int(np.round(np.log2(0.032 * sample_rate)))
    return {"n_fft": n_fft, "hop_length": n_fft // 4, "n_mels": 64 if sample_rate < 16000 else 80}


def log_mel_distance(estimate: np.ndarray, reference: np.ndarray, sample_rate: int) -> float:
    """Mean absolute difference of log10 mel magnitude spectrograms (magnitudes clamped at 1e-5).

    The mel distance DAC reports (Kumar et al. 2023), at a single resolution from
    :func:`mel_settings`. Signals are cut to the shorter length; 0 means identical.
    """
    import librosa  # here, not at the top: it loads scipy and numba (2-4 s), which only metric calls need

    estimate, reference = _common_length(_as_1d(estimate, "estimate"), _as_1d(reference, "reference"))
    settings = mel_settings(sample_rate)

    def log_mel(x: np.ndarray) -> np.ndarray:
        mel = librosa.feature.melspectrogram(y=x, sr=sample_rate, power=1.0, **settings)
        return np.log10(np.maximum(mel, LOG_CLAMP))

    return float(np.mean(np.abs(log_mel(estimate) - log_mel(reference))))


def stoi(estimate: np.ndarray, reference: np.ndarray, sample_rate: int) -> float:
    """Short-time objective intelligibility (Taal et al. 2011) via ``pystoi``, in [0, 1]."""
    try:
        from pystoi import stoi as _stoi
    except ImportError as err:
        raise VqtokError(f"STOI needs the pystoi package: {EVAL_EXTRA_HINT}") from err
    estimate, reference = _common_length(_as_1d(estimate, "estimate"), _as_1d(reference, "reference"))
    return float(_stoi(reference, estimate, sample_rate, extended=False))


def pesq_nb(estimate: np.ndarray, reference: np.ndarray, sample_rate: int) -> float:
    """Narrow-band PESQ (ITU-T P.862, MOS-LQO scale ~1-4.5) via the ``pesq`` package.

    P.862 is defined at 8 and 16 kHz; other rates are resampled to 8 kHz first.
    """
    try:
        from pesq import pesq as _pesq
    except ImportError as err:
        raise VqtokError(f"PESQ needs the pesq package: {EVAL_EXTRA_HINT}") from err
    estimate, reference = _common_length(_as_1d(estimate, "estimate"), _as_1d(reference, "reference"))
    if sample_rate not in (8000, 16000):
        import librosa

        estimate = librosa.resample(estimate, orig_sr=sample_rate, target_sr=8000)
        reference = librosa.resample(reference, orig_sr=sample_rate, target_sr=8000)
        sample_rate = 8000
    return float(_pesq(sample_rate, reference, estimate, "nb"))


def mse(estimate: np.ndarray, reference: np.ndarray) -> float:
    """Mean squared error over all elements (arrays of equal shape)."""
    diff = np.asarray(estimate, dtype=np.float64) - np.asarray(reference, dtype=np.float64)
    return float(np.mean(diff ** 2))


def psnr(estimate: np.ndarray, reference: np.ndarray, peak: float = 1.0) -> float:
    """Peak SNR in dB: ``10 log10(peak^2 / mse)``; infinite for identical inputs."""
    err = mse(estimate, reference)
    return float("inf") if err == 0 else float(10 * np.log10(peak ** 2 / err))


def codebook_stats(codes: np.ndarray, codebook_size: int) -> dict[str, float]:
    """Code usage statistics over all entries of an integer array.

    ``usage``: fraction of the ``codebook_size`` codes that occur at least once;
    ``entropy_bits``: entropy of the empirical code distribution in bits;
    ``perplexity``: ``2 ** entropy_bits`` (the effective number of codes, at most ``codebook_size``).
    """
    codes = np.asarray(codes).ravel()
    if codes.size and (codes.min() < 0 or codes.max() >= codebook_size):
        raise VqtokError(f"codes range over [{codes.min()}, {codes.max()}], outside a codebook of "
                         f"{codebook_size} codes; pass the codebook size of the tokenizer that made them")
    counts = np.bincount(codes.astype(np.int64), minlength=codebook_size)
    probs = counts[counts > 0] / max(codes.size, 1)
    entropy = float(-(probs * np.log2(probs)).sum()) if codes.size else 0.0
    return {"usage": float((counts > 0).mean()), "perplexity": float(2 ** entropy), "entropy_bits": entropy}


def mean_metric(metric: Callable[..., float], estimates: Sequence[np.ndarray],
                references: Sequence[np.ndarray], **kwargs: Any) -> float:
    """Mean of ``metric(estimate, reference, **kwargs)`` over pairs of signals of any lengths."""
    if len(estimates) != len(references):
        raise ValueError(f"{len(estimates)} estimates but {len(references)} references")
    return float(np.mean([metric(e, r, **kwargs) for e, r in zip(estimates, references)]))
