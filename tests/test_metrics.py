"""Tests for vqtok.metrics (the speech evaluation protocol is tested in tests/bench/)."""

import builtins

import numpy as np
import pytest
import soundfile as sf

from testdata import SHARED_DATA
from vqtok import metrics
from vqtok.errors import VqtokError

FSDD = SHARED_DATA / "fsdd" / "recordings"
SR = 8000


def noise(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(n)


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    audio, rate = sf.read(FSDD / "3_jackson_0.wav", dtype="float32")
    assert rate == SR
    return audio


def test_si_snr_identity_and_known_snr() -> None:
    x = noise(8000)
    assert metrics.si_snr(x, x) > 60
    for snr_db in (0.0, 10.0, 20.0):
        n = noise(8000, seed=1)
        # Remove the part of the noise along x so the SNR is exactly snr_db by construction.
        n -= (n @ x) / (x @ x) * x
        n *= np.sqrt((x @ x) / (n @ n) / 10 ** (snr_db / 10))
        assert metrics.si_snr(x + n, x) == pytest.approx(snr_db, abs=0.5)


def test_si_snr_is_scale_invariant() -> None:
    x, y = noise(4000), noise(4000) * 0.3 + noise(4000, 1)
    assert metrics.si_snr(3.7 * y, x) == pytest.approx(metrics.si_snr(y, x), abs=1e-9)
    assert metrics.si_snr(y + 5.0, x) == pytest.approx(metrics.si_snr(y, x), abs=1e-9)


@pytest.mark.parametrize("delay", [37, -37])
def test_align_recovers_delay(speech: np.ndarray, delay: int) -> None:
    shifted = np.roll(speech, delay)  # estimate[n] = reference[n - delay]
    assert metrics.find_delay(shifted, speech, max_shift=200) == delay
    assert metrics.si_snr(shifted, speech) < 10
    assert metrics.si_snr(shifted, speech, align=True, max_shift=200) > 30


def test_log_mel_distance(speech: np.ndarray) -> None:
    assert metrics.log_mel_distance(speech, speech, SR) == 0.0
    near = metrics.log_mel_distance(speech + 0.001 * noise(len(speech)), speech, SR)
    far = metrics.log_mel_distance(speech + 0.05 * noise(len(speech)), speech, SR)
    assert 0 < near < far


def test_mse_psnr_known_values() -> None:
    ref = np.zeros((4, 4))
    est = np.full((4, 4), 0.1)
    assert metrics.mse(est, ref) == pytest.approx(0.01)
    assert metrics.psnr(est, ref) == pytest.approx(20.0)
    assert metrics.psnr(est * 255, ref, peak=255.0) == pytest.approx(20.0)
    assert metrics.psnr(ref, ref) == float("inf")


def test_codebook_stats() -> None:
    uniform = np.tile(np.arange(16), 10).reshape(4, 40)
    stats = metrics.codebook_stats(uniform, 16)
    assert stats["perplexity"] == pytest.approx(16)
    assert stats["entropy_bits"] == pytest.approx(4.0)
    assert stats["usage"] == 1.0
    one = metrics.codebook_stats(np.zeros(100, dtype=np.int64), 64)
    assert one == {"usage": 1 / 64, "perplexity": 1.0, "entropy_bits": 0.0}
    with pytest.raises(VqtokError, match="64 codes"):
        metrics.codebook_stats(np.array([0, 64]), 64)


def test_stoi_and_pesq_on_real_speech(speech: np.ndarray) -> None:
    pytest.importorskip("pesq", reason="PESQ needs the eval extra (pip install vqtok[eval])")
    assert metrics.stoi(speech, speech, SR) == pytest.approx(1.0, abs=1e-3)
    assert metrics.pesq_nb(speech, speech, SR) > 4.0
    degraded = speech + 0.02 * noise(len(speech)).astype(np.float32)
    assert metrics.stoi(degraded, speech, SR) < 0.99
    assert metrics.pesq_nb(degraded, speech, SR) < 3.5


def test_missing_eval_extra_names_the_fix(monkeypatch: pytest.MonkeyPatch, speech: np.ndarray) -> None:
    real_import = builtins.__import__

    def no_eval(name: str, *args, **kwargs):
        if name in ("pesq", "pystoi"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_eval)
    with pytest.raises(VqtokError, match=r'vqtok\[eval\]'):
        metrics.pesq_nb(speech, speech, SR)
    with pytest.raises(VqtokError, match=r'vqtok\[eval\]'):
        metrics.stoi(speech, speech, SR)
