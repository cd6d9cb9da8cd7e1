"""AudioStream: piecewise reading identical to load_audio, and strict checks (truncated WAV, NaN, not audio)."""

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from vqtok import VqtokError
from vqtok.data.audio import load_audio, mp3_span
from vqtok.data.audio import check_wav_complete
from vqtok.data.stream import AudioStream


def write(path, n, sr, channels=1, subtype="PCM_16"):
    rng = np.random.default_rng(n)
    sf.write(path, (0.2 * rng.standard_normal((n, channels))).astype(np.float32), sr, subtype=subtype)
    return path


@pytest.mark.parametrize("sr,channels,subtype", [(44100, 2, "PCM_24"), (96000, 1, "PCM_16"), (8000, 1, "PCM_16"),
                                                 (4000, 3, "FLOAT"), (22050, 1, "PCM_U8")])
def test_pieces_equal_load_audio(tmp_path, sr, channels, subtype):
    path = write(tmp_path / "a.wav", sr // 3 + 17, sr, channels, subtype)
    ref, info = load_audio(path, 8000)
    stream = AudioStream(path, 8000)
    assert stream.length == len(ref) and stream.info == info
    for size in [1000, 4097, 1 << 16]:
        assert np.array_equal(np.concatenate(list(stream.pieces(size))), ref)


def test_checks_on_opening(tmp_path):
    with pytest.raises(VqtokError, match="not found"):
        AudioStream(tmp_path / "none.wav", 8000)
    (tmp_path / "e.wav").write_bytes(b"")
    with pytest.raises(VqtokError, match="empty"):
        AudioStream(tmp_path / "e.wav", 8000)
    (tmp_path / "t.wav").write_text("hello " * 100)
    with pytest.raises(VqtokError, match="not readable as audio"):
        AudioStream(tmp_path / "t.wav", 8000)


def test_truncated_wav_is_refused(tmp_path):
    data = write(tmp_path / "a.wav", 8000, 8000).read_bytes()
    check_wav_complete(tmp_path / "a.wav")  # the whole file passes
    (tmp_path / "cut.wav").write_bytes(data[:-1000])
    with pytest.raises(VqtokError, match=r"cut\.wav: truncated WAV \(the header declares 16000 bytes"):
        AudioStream(tmp_path / "cut.wav", 8000)
    write(tmp_path / "b.flac", 8000, 8000)
    check_wav_complete(tmp_path / "b.flac")  # not a WAV: nothing to check


def test_nan_raises_while_reading(tmp_path):
    x = np.zeros(5000, np.float32)
    x[4000] = np.nan
    sf.write(tmp_path / "n.wav", x, 8000, subtype="FLOAT")
    stream = AudioStream(tmp_path / "n.wav", 8000)
    with pytest.raises(VqtokError, match=r"n\.wav: 1 samples from 0\.50 s on are NaN or Inf"):
        list(stream.pieces(4000))


MP3_NO_TAG = Path(__file__).parent / "files" / "chirp_16k_lame_no_gapless_tag.mp3"


def chirp() -> np.ndarray:
    """The source of MP3_NO_TAG: 1 s at 16 kHz, 200 -> 1000 Hz, faded in over 50 ms (lame 3.100, default settings,
    which writes no Xing/Info tag at this rate)."""
    t = np.arange(16000) / 16000
    return (0.3 * np.sin(2 * np.pi * (200 * t + 400 * t * t)) * np.minimum(1, t * 20)).astype(np.float32)


def test_an_mp3_without_gapless_tag_is_read_without_the_coding_delay():
    """libsndfile decodes this file 1280 samples (0.08 s) longer than its source, 1105 of them (the encoder's
    576 + the decoder's 529) in front: reading cuts the delay, keeps every source sample and at most one frame
    (576 samples) more, whether read whole or as a stream."""
    assert sf.info(str(MP3_NO_TAG)).frames == 17280
    assert mp3_span(MP3_NO_TAG, 17280) == (1105, 16128)  # 17280 - 1105 - (576 - 529)
    x = chirp()
    y, info = load_audio(MP3_NO_TAG, 16000)
    assert len(y) == info.orig_frames == 16128
    assert np.abs(y[:16000] - x).max() < 0.03 and np.abs(y[16000:]).max() < 0.01  # aligned: no delay left
    stream = AudioStream(MP3_NO_TAG, 8000)
    assert stream.length == 8064 and stream.info.orig_frames == 16128
    # one piece: libsndfile's MP3 reads of sizes that are not whole frames do not always join up exactly
    assert np.array_equal(np.concatenate(list(stream.pieces())), load_audio(MP3_NO_TAG, 8000)[0])


def test_an_mp3_with_gapless_tag_is_left_to_libsndfile(tmp_path):
    x = chirp()
    sf.write(tmp_path / "tagged.mp3", x, 16000, format="MP3")  # libsndfile writes a Xing tag with LAME's fields
    assert mp3_span(tmp_path / "tagged.mp3", 16000) == (0, 16000)
    y, info = load_audio(tmp_path / "tagged.mp3", 16000)
    assert len(y) == info.orig_frames == 16000 and np.abs(y - x).max() < 0.05
