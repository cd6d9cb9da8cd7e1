"""Defaults without -m: encode picks by input kind, decode finds the tokenizer from the sidecar, errors are one line."""

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import vqtok
from testdata import SHARED_DATA
from vqtok.cli import main
from vqtok.data import TokenDataset
from vqtok import registry

SHARED = SHARED_DATA
SPEECH = SHARED / "speech" / "test" / "librispeech-test-other" / "1688-142285-0000.flac"


def run(*args, code=0):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == code, (args, result.stdout, result.stderr)
    return result


def digit_png(path: Path, index: int = 0) -> Path:
    with gzip.open(SHARED / "mnist" / "t10k-images-idx3-ubyte.gz") as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    Image.fromarray(images[index]).save(path)
    return path


def test_default_run(shipped, tmp_path, monkeypatch):
    """The fresh-install commands, with no -m anywhere."""
    monkeypatch.chdir(tmp_path)
    shutil.copy(SPEECH, "x.flac")
    digit_png(tmp_path / "digit.png")
    res = run("encode", "x.flac")
    assert res.stderr.count("using the shipped tokenizer speech-16k") == 1
    assert vqtok.read_codes("x.npy").meta["tokenizer"]["name"] == "speech-16k"
    res = run("decode", "x.npy")
    assert "decoding with speech-16k" in res.stderr
    import soundfile as sf

    wave, rate = sf.read("x.decoded.wav")
    assert rate == 16000 and len(wave) == sf.info("x.flac").frames
    assert "using the shipped tokenizer mnist" in run("encode", "digit.png").stderr
    run("decode", "digit.npy")
    assert Image.open("digit.decoded.png").size == (28, 28)
    table = run("models").stdout
    licences = {d["licence"] for name in registry.names() for d in registry.get(name).card.get("training_data", [])}
    assert all(name in table for name in registry.names()) and licences and all(lic in table for lic in licences)
    run("sample", "mnist-prior", "-n", "16", "--label", "3", "-o", "threes.png")
    grid = np.asarray(Image.open("threes.png"))
    assert grid.shape[0] > 28 and grid.std() > 0
    card = run("info", "speech-16k").stdout
    assert "training data" in card and "fingerprint   " + registry.get("speech-16k").fingerprint in card


def test_encode_default_is_by_kind_only(shipped, tmp_path):
    """An 8 kHz file still gets speech-16k (no switching by rate); a folder of images gets mnist."""
    shutil.copy(SHARED / "fsdd" / "recordings" / "0_george_0.wav", tmp_path / "a.wav")
    res = run("encode", tmp_path / "a.wav")
    assert "speech-16k" in res.stderr and vqtok.read_codes(tmp_path / "a.npy").meta["tokenizer"]["sample_rate"] == 16000
    (tmp_path / "imgs").mkdir()
    for i in range(2):
        digit_png(tmp_path / "imgs" / f"{i}.png", i)
    assert "mnist" in run("encode", tmp_path / "imgs", "-o", tmp_path / "codes").stderr
    data = TokenDataset(tmp_path / "codes")
    assert data.load_tokenizer().name == "mnist" and len(data) == 2
    shutil.copy(tmp_path / "a.wav", tmp_path / "imgs")
    res = run("encode", tmp_path / "imgs", code=2)
    assert "both audio and images; pass -m" in res.stderr


def test_missing_default(shipped, tmp_path, monkeypatch):
    monkeypatch.setattr(registry, "MODELS_DIR", tmp_path / "none")
    shutil.copy(SHARED / "fsdd" / "recordings" / "0_george_0.wav", tmp_path / "a.wav")
    res = run("encode", tmp_path / "a.wav", code=2)
    assert "default tokenizer speech-16k is not installed" in res.stderr and len(res.stderr.splitlines()) == 1


def test_decode_finds_the_recorded_path_or_says_why(shipped, tmp_path, work):
    """Not shipped: the path recorded at encode time, if it still holds that fingerprint; else one-line errors."""
    tok_file = tmp_path / "tok.safetensors"
    shutil.copy(work / "speech-8k" / "tokenizer.safetensors", tok_file)
    shutil.copy(SHARED / "fsdd" / "recordings" / "0_george_0.wav", tmp_path / "a.wav")
    run("encode", tmp_path / "a.wav", "-m", tok_file)
    fp = vqtok.load_tokenizer(tok_file).fingerprint
    assert "decoding with " + str(tok_file) in run("decode", tmp_path / "a.npy").stderr
    assert vqtok.read_codes(tmp_path / "a.npy").load_tokenizer().fingerprint == fp
    # The recorded path now holds another tokenizer: refused, both fingerprints named.
    shutil.copy(work / "speech-16k" / "tokenizer.safetensors", tok_file)
    other = vqtok.load_tokenizer(tok_file).fingerprint
    res = run("decode", tmp_path / "a.npy", "--force", code=2)
    assert f"made by tokenizer {fp}, but {tok_file}" in res.stderr and f"holds tokenizer {other}" in res.stderr
    # Gone: the fingerprint and a request for -m.
    tok_file.unlink()
    res = run("decode", tmp_path / "a.npy", "--force", code=2)
    assert res.stderr.strip() == (f"error: {tmp_path / 'a.npy'}: made by tokenizer {fp}, which is not shipped with "
                                  f"vqtok and not found; it was at {tok_file} when encoding; pass -m TOKENIZER")
    with pytest.raises(vqtok.VqtokError, match=f"made by tokenizer {fp}.*pass -m"):
        vqtok.read_codes(tmp_path / "a.npy").load_tokenizer()
    run("decode", tmp_path / "a.npy", "--force", "-m", work / "speech-8k")  # -m still decodes it
