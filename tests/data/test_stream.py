"""AudioStream: piecewise reading identical to load_audio, and strict checks (truncated WAV, NaN, not audio)."""

import numpy as np
import pytest
import soundfile as sf

from vqtok import VqtokError
from vqtok.data.audio import load_audio
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
