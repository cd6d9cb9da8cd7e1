"""The codec contract: level and its undoing, routes that give the same codes, the shared WAV and PNG writers."""

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from vqtok import codec, modality
from vqtok.tokenizer import LevelConfig, TokenizerConfig, build_tokenizer, save_tokenizer
from vqtok.tokenizer.codes import read_codes, write_codes


def saved_tokenizer(path, dims):
    torch.manual_seed(0)
    tok = build_tokenizer(TokenizerConfig(dims=dims, sample_rate=8000 if dims == 1 else None,
                                          net=LevelConfig(channels=[4], strides=[2], res_depth=1, code_dim=4,
                                                          codebook_size=8))).eval()
    save_tokenizer(tok, path)
    return tok


def recording(monkeypatch, name):
    calls = []
    original = getattr(modality, name)
    monkeypatch.setattr(modality, name, lambda *args: calls.append(args) or original(*args))
    return calls


def test_write_decoded_uses_the_shared_writers(tmp_path, monkeypatch):
    tok = saved_tokenizer(tmp_path / "img.safetensors", dims=2)
    source = {"kind": "image", "path": "x", "size": [6, 10]}
    write_codes(tmp_path / "c.npy", tok.encode(torch.rand(1, 6, 10)), tok, source)
    pngs = recording(monkeypatch, "save_png")
    file = read_codes(tmp_path / "c.npy", tok)
    codec.Codec(tok).write(tmp_path / "c.png", codec.Codec(tok).decode(file.levels, file.source))
    assert len(pngs) == 1 and pngs[0][1] == tmp_path / "c.png"
    with torch.no_grad():
        image = tok.decode(torch.from_numpy(np.load(tmp_path / "c.npy")).long(), size=(6, 10)).numpy()  # (1, H, W)
    expected = np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)[0]
    assert np.array_equal(np.asarray(Image.open(tmp_path / "c.png")), expected)

    tok = saved_tokenizer(tmp_path / "aud.safetensors", dims=1)
    source = {"kind": "audio", "path": "a", "length": 101}
    write_codes(tmp_path / "a.npy", tok.encode(torch.randn(1, 101) * 0.1), tok, source)
    wavs = recording(monkeypatch, "write_wav")
    file = read_codes(tmp_path / "a.npy", tok)
    codec.Codec(tok).write(tmp_path / "a.wav", codec.Codec(tok).decode(file.levels, file.source))
    assert len(wavs) == 1 and wavs[0][0] == tmp_path / "a.wav" and wavs[0][2] == 8000
    audio, rate = sf.read(tmp_path / "a.wav")
    assert rate == 8000 and len(audio) == 101


def test_level_and_its_undoing_by_hand(tmp_path):
    """A tokenizer with level_db: the input is scaled by the gain that brings its gated level there, the gain is
    recorded, and decoding multiplies by 10^(-gain/20); at_level=False leaves both alone."""
    tok = saved_tokenizer(tmp_path / "aud.safetensors", dims=1)
    tok.config.level_db = -20.0
    x = (0.5 * np.sin(np.arange(4000) * 2 * np.pi * 200 / 8000)).astype(np.float32)  # RMS 0.354: -9.03 dBFS
    item = codec.Codec(tok).prepare(x)
    gain = item.source["gain_db"]
    assert gain == pytest.approx(-20.0 - 20 * np.log10(0.5 / np.sqrt(2)), abs=1e-3)  # -10.97 dB
    assert np.allclose(item.data, x * 10 ** (gain / 20), rtol=1e-6)
    plain = codec.Codec(tok, at_level=False).prepare(x)
    assert "gain_db" not in plain.source and np.array_equal(plain.data, x)
    levels, out = codec.Codec(tok).round_trip(x, postfilter=False)
    with torch.no_grad():
        y = tok.decode(tok.encode(torch.from_numpy(item.data)), size=4000)[0].numpy()
    assert np.array_equal(levels[0].numpy(), tok.encode(torch.from_numpy(item.data)).numpy())
    assert np.allclose(out.data, y * np.float32(10 ** (-gain / 20)), atol=1e-6) and out.sample_rate == 8000


def test_long_file_streamed_equals_in_memory(tmp_path):
    """A file longer than one block is encoded from the file block by block (level over the whole file first):
    the same codes and gain as the whole clip prepared in memory and batched, for any chunk size."""
    tok = saved_tokenizer(tmp_path / "aud.safetensors", dims=1)
    tok.config.level_db = -24.0
    rng = np.random.default_rng(0)
    n = tok.block_frames * tok.hop * 2 + 37
    x = (np.cumsum(rng.standard_normal(n)) * 0.01).astype(np.float32)
    sf.write(tmp_path / "long.wav", x, 8000, subtype="FLOAT")
    whole = codec.Codec(tok).prepare(x)
    expected = codec.Codec(tok).encode([whole])[0]
    for chunk in (None, 0.3):
        c = codec.Codec(tok, chunk_seconds=chunk)
        item = c.open(tmp_path / "long.wav")
        assert item.streamed
        assert torch.equal(c.encode([item])[0], expected) and item.source["gain_db"] == whole.source["gain_db"]
