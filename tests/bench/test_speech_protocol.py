"""The speech evaluation protocol of bench/speech_protocol.py: digit strings, folder pieces, delay, scoring."""

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from testdata import SHARED_DATA
from speech_protocol import (
    EvalPiece,
    compensate_delay,
    cut_bounds,
    defined_pesq_modes,
    evaluate_codec,
    fit_length,
    make_eval_strings,
    make_folder_pieces,
    pesq_score,
)

from vqtok.data.audio import resample
from vqtok.errors import VqtokError

SHARED = SHARED_DATA
FSDD = SHARED / "fsdd" / "recordings"
SPEECH_FILE = SHARED / "speech" / "test" / "librispeech-test-other" / "1688-142285-0000.flac"


@pytest.fixture(scope="module")
def speech16k() -> np.ndarray:
    """3 s of real read speech at 16 kHz."""
    audio, rate = sf.read(SPEECH_FILE, dtype="float32")
    assert rate == 16000
    return audio[16000:64000]


def test_eval_strings_are_deterministic() -> None:
    a = make_eval_strings(FSDD, n=6)
    b = make_eval_strings(FSDD, n=6)
    assert [s.files for s in a] == [s.files for s in b]
    assert [s.speaker for s in a[:5]] == ["george", "jackson", "lucas", "nicolas", "yweweler"]
    assert a[5].speaker == "george"
    for s in a:
        assert s.audio.dtype == np.float32 and len(s.digits) == 5
        assert all(int(f.split("_")[2][:-4]) < 5 for f in s.files)  # test takes only
        assert not s.audio[:800].any() and not s.audio[-800:].any()  # 0.1 s silence at both ends
        clips = sum(len(sf.read(FSDD / f)[0]) for f in s.files)
        assert len(s.audio) == clips + 6 * 800


def test_eval_strings_of_chosen_speakers() -> None:
    everyone = make_eval_strings(FSDD, n=4)
    nicolas = make_eval_strings(FSDD, n=4, speakers=["nicolas"])
    assert {s.speaker for s in nicolas} == {"nicolas"}
    # The same draws as the full protocol, only the speaker changes.
    assert [s.digits for s in nicolas] == [s.digits for s in everyone]
    assert nicolas[0].files == [f.replace("george", "nicolas") for f in everyone[0].files]
    two = make_eval_strings(FSDD, n=4, speakers=["lucas", "george"])
    assert [s.speaker for s in two] == ["george", "lucas", "george", "lucas"]
    with pytest.raises(VqtokError, match="speaker.*bob.*george, jackson"):
        make_eval_strings(FSDD, n=1, speakers=["bob"])


def test_cut_bounds_equal_pieces_of_at_most_max() -> None:
    assert cut_bounds(20, 8) == [(0, 7), (7, 13), (13, 20)]
    assert cut_bounds(16, 8) == [(0, 8), (8, 16)]
    assert cut_bounds(5, 8) == [(0, 5)]


def test_folder_pieces(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    long = (0.1 * rng.standard_normal(16000 * 20)).astype(np.float32)  # 20 s at 16 kHz -> 3 pieces of 6.67 s
    (tmp_path / "a").mkdir()
    sf.write(tmp_path / "a" / "long.wav", long, 16000, subtype="FLOAT")
    sf.write(tmp_path / "short.wav", np.zeros(8000 * 3, np.float32), 8000)  # 3 s at 8 kHz, read at 16 kHz
    pieces = make_folder_pieces(tmp_path, 16000)
    assert [p.files[0] for p in pieces] == ["a/long.wav"] * 3 + ["short.wav"]
    assert [len(p.audio) for p in pieces] == [106667, 106666, 106667, 48000]
    assert [p.start for p in pieces[:3]] == pytest.approx([0.0, 106667 / 16000, 213333 / 16000])
    assert np.array_equal(np.concatenate([p.audio for p in pieces[:3]]), long)
    spread = make_folder_pieces(tmp_path, 16000, n=2)  # pieces 0 and 2 of 4
    assert np.array_equal(spread[1].audio, pieces[2].audio)
    with pytest.raises(VqtokError, match="no such file"):
        make_folder_pieces(tmp_path / "missing", 16000)


def test_evaluate_codec_identity_and_delay() -> None:
    strings = make_eval_strings(FSDD, n=2)
    ident = evaluate_codec(lambda x: x, strings, pesq=())
    assert ident["si_snr"] > 60 and ident["stoi"] > 0.999 and ident["log_mel_distance"] == 0.0
    assert len(ident["per_piece"]["stoi"]) == 2 and "pesq_nb" not in ident
    # A pure 20 ms delay with a longer output is compensated, not scored as distortion.
    delayed = evaluate_codec(lambda x: np.concatenate([np.zeros(160, np.float32), x]), strings, pesq=())
    assert delayed["si_snr"] > 60 and delayed["stoi"] > 0.999
    assert np.array_equal(fit_length(np.ones(3), 5), [1, 1, 1, 0, 0])


@pytest.mark.parametrize("delay", [37, -37])
def test_compensate_delay_lines_up(delay: int) -> None:
    speech, _ = sf.read(FSDD / "3_jackson_0.wav", dtype="float32")
    shifted = np.roll(speech, delay)  # estimate[n] = reference[n - delay]
    assert np.array_equal(compensate_delay(shifted, speech, 200)[50:-50], speech[50:-50])


def test_wideband_scores_and_delay_window_at_16k(speech16k: np.ndarray) -> None:
    pytest.importorskip("pesq", reason="PESQ needs the eval extra (pip install vqtok[eval])")
    assert defined_pesq_modes(16000) == ("wb", "nb") and defined_pesq_modes(8000) == ("nb",)
    # Trailing silence, so that a delayed output loses nothing but zeros when cut to the input's length.
    piece = [EvalPiece(np.concatenate([speech16k, np.zeros(3200, np.float32)]))]
    # 0.15 s delay: inside the default +-0.2 s window at 16 kHz (3200 samples), beyond 1600 samples.
    result = evaluate_codec(lambda x: np.concatenate([np.zeros(2400, np.float32), x]), piece, 16000)
    assert result["pesq_wb"] > 4.5 and result["pesq_nb"] > 4.4 and result["stoi"] > 0.999
    # Telephone band (through 8 kHz and back): narrow-band PESQ cannot tell, wide-band PESQ hears it.
    narrow = resample(resample(speech16k, 16000, 8000), 8000, 16000)
    assert pesq_score(narrow, speech16k, 16000, "wb") < 3.6 < 4.4 < pesq_score(narrow, speech16k, 16000, "nb")
    with pytest.raises(VqtokError, match="PESQ-wb is defined at 16000 Hz"):
        pesq_score(speech16k, speech16k, 8000, "wb")
