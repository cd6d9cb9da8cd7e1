"""Decoding writes through the shared WAV and PNG writers (data/audio.write_wav, plots.save_png)."""

import numpy as np
import soundfile as sf
import torch
from PIL import Image

from vqtok import codec
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
    original = getattr(codec, name)
    monkeypatch.setattr(codec, name, lambda *args: calls.append(args) or original(*args))
    return calls


def test_write_decoded_uses_the_shared_writers(tmp_path, monkeypatch):
    tok = saved_tokenizer(tmp_path / "img.safetensors", dims=2)
    source = {"kind": "image", "path": "x", "size": [6, 10]}
    write_codes(tmp_path / "c.npy", tok.encode(torch.rand(1, 6, 10)), tok, source)
    pngs = recording(monkeypatch, "save_png")
    file = read_codes(tmp_path / "c.npy", tok)
    codec.write_decoded(tmp_path / "c.png", codec.Codec(tok).decode(file.levels, file.source))
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
    codec.write_decoded(tmp_path / "a.wav", codec.Codec(tok).decode(file.levels, file.source))
    assert len(wavs) == 1 and wavs[0][0] == tmp_path / "a.wav" and wavs[0][2] == 8000
    audio, rate = sf.read(tmp_path / "a.wav")
    assert rate == 8000 and len(audio) == 101
