"""Every bad input gives a one-line error naming the file, exit code 2, no traceback, and nothing written."""

import json

import numpy as np
import pytest
import soundfile as sf
from clihelpers import listing, make_tokenizer, tone, write_wav


def assert_clean_failure(res, root, before, *names):
    assert res.exit_code == 2, res.output
    err = res.stderr.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in res.output, err
    for name in names:
        assert str(name) in err, (name, err)
    assert listing(root) == before, "something was written"


@pytest.fixture
def setup(tmp_path, audio_tok, cli):
    good = write_wav(tmp_path / "good.wav", 1000)
    code_out = tmp_path / "good.npy"
    assert cli("encode", good, "-m", audio_tok, "-o", code_out).exit_code == 0
    return tmp_path, audio_tok, code_out


def encode_fails(cli, tmp_path, tok, bad, *names, out=None):
    before = listing(tmp_path)
    res = cli("encode", bad, "-m", tok, "-o", out or tmp_path / "x.npy")
    assert_clean_failure(res, tmp_path, before, *names)
    return res


def test_missing_path(setup, cli):
    tmp_path, tok, _ = setup
    encode_fails(cli, tmp_path, tok, tmp_path / "nope.wav", "nope.wav", "no such file")


def test_empty_file(setup, cli):
    tmp_path, tok, _ = setup
    (tmp_path / "empty.wav").write_bytes(b"")
    encode_fails(cli, tmp_path, tok, tmp_path / "empty.wav", "empty.wav", "empty")


def test_text_file_named_wav(setup, cli):
    tmp_path, tok, _ = setup
    (tmp_path / "notes.wav").write_text("these are my notes, not audio\n" * 20)
    encode_fails(cli, tmp_path, tok, tmp_path / "notes.wav", "notes.wav", "not readable as audio")


def test_truncated_wav(setup, cli):
    tmp_path, tok, _ = setup
    data = (tmp_path / "good.wav").read_bytes()
    (tmp_path / "cut.wav").write_bytes(data[: len(data) // 2])  # header intact, half the samples gone
    encode_fails(cli, tmp_path, tok, tmp_path / "cut.wav", "cut.wav", "truncated WAV")
    (tmp_path / "cut.wav").write_bytes(data[:30])  # cut inside the header
    encode_fails(cli, tmp_path, tok, tmp_path / "cut.wav", "cut.wav")


def test_clip_shorter_than_one_frame(setup, cli):
    tmp_path, tok, _ = setup
    short = write_wav(tmp_path / "short.wav", 19)  # hop is 20 samples
    encode_fails(cli, tmp_path, tok, short, "short.wav", "shorter than one frame")
    hi = write_wav(tmp_path / "short44.wav", 100, sr=44100)  # 100 samples at 44.1 kHz = 19 at 8 kHz
    encode_fails(cli, tmp_path, tok, hi, "short44.wav", "shorter than one frame")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_samples(setup, cli, bad):
    tmp_path, tok, _ = setup
    x = tone(2000)
    x[1500] = bad
    sf.write(tmp_path / "nan.wav", x, 8000, subtype="FLOAT")
    encode_fails(cli, tmp_path, tok, tmp_path / "nan.wav", "nan.wav", "NaN or Inf")


def test_non_finite_late_in_a_long_streamed_file(setup, cli):
    tmp_path, tok, _ = setup
    x = tone(30000)
    x[29000] = np.nan
    sf.write(tmp_path / "late.wav", x, 8000, subtype="FLOAT")
    before = listing(tmp_path)
    res = cli("encode", tmp_path / "late.wav", "-m", tok, "-o", tmp_path / "x.npy", "--chunk-seconds", "0.5")
    assert_clean_failure(res, tmp_path, before, "late.wav", "NaN or Inf")


def write_raw_codes(path, array):
    """Replace a codes array and re-hash the sidecar (as a buggy producer would write it)."""
    from vqtok.tokenizer.codes import _file_sha256, sidecar_path

    with open(path, "wb") as f:
        np.save(f, array)
    side = sidecar_path(path)
    meta = json.loads(side.read_text())
    meta["array_sha256"] = _file_sha256(path)
    side.write_text(json.dumps(meta))


def decode_fails(cli, tmp_path, tok, codes, *names):
    before = listing(tmp_path)
    res = cli("decode", codes, "-m", tok, "-o", tmp_path / "y.wav")
    assert_clean_failure(res, tmp_path, before, *names)


def test_codes_out_of_range(setup, cli):
    tmp_path, tok, codes = setup
    write_raw_codes(codes, np.full(50, 64, dtype=np.int16))
    decode_fails(cli, tmp_path, tok, codes, "good.npy", "outside the 64-code codebook")


def test_codes_of_wrong_dtype_or_shape(setup, cli):
    tmp_path, tok, codes = setup
    write_raw_codes(codes, np.zeros(50, dtype=np.float64))
    decode_fails(cli, tmp_path, tok, codes, "good.npy", "dtype float64")
    write_raw_codes(codes, np.zeros((5, 10), dtype=np.int16))
    decode_fails(cli, tmp_path, tok, codes, "good.npy", "shape [5, 10]")


def test_codes_from_another_tokenizer(setup, cli):
    tmp_path, tok, codes = setup
    other = make_tokenizer(tmp_path / "m2" / "other.safetensors", seed=7)
    from vqtok import load_tokenizer

    fp_a, fp_b = load_tokenizer(tok).fingerprint, load_tokenizer(other).fingerprint
    decode_fails(cli, tmp_path, other, codes, "good.npy", fp_a, fp_b)


def test_tokenizer_file_that_is_not_a_checkpoint(setup, cli):
    tmp_path, _, codes = setup
    fake = tmp_path / "fake.safetensors"
    fake.write_text("hello")
    encode_fails(cli, tmp_path, fake, tmp_path / "good.wav", "fake.safetensors", "not a vqtok tokenizer")
    from safetensors.numpy import save_file

    save_file({"w": np.zeros(3, np.float32)}, tmp_path / "plain.safetensors")
    encode_fails(cli, tmp_path, tmp_path / "plain.safetensors", tmp_path / "good.wav", "plain.safetensors",
                 "not a vqtok tokenizer")
    decode_fails(cli, tmp_path, fake, codes, "fake.safetensors")


def test_output_exists_without_force(setup, cli):
    tmp_path, tok, codes = setup
    res = encode_fails(cli, tmp_path, tok, tmp_path / "good.wav", "good.npy", "--force", out=codes)
    assert "already exists" in res.stderr
    assert cli("encode", tmp_path / "good.wav", "-m", tok, "-o", codes, "--force").exit_code == 0
    assert cli("decode", codes, "-m", tok, "-o", tmp_path / "d.wav").exit_code == 0
    before = listing(tmp_path)
    res = cli("decode", codes, "-m", tok, "-o", tmp_path / "d.wav")
    assert_clean_failure(res, tmp_path, before, "d.wav", "--force")


def test_output_folder_that_cannot_be_written(setup, cli):
    tmp_path, tok, _ = setup
    (tmp_path / "afile").write_text("x")
    before = listing(tmp_path)
    res = cli("encode", tmp_path / "good.wav", "-m", tok, "-o", tmp_path / "afile" / "out")
    assert_clean_failure(res, tmp_path, before, "afile", "cannot write")
    res = cli("encode", tmp_path / "good.wav", "-m", tok, "-o", tmp_path / "afile" / "sub" / "x.npy")
    assert_clean_failure(res, tmp_path, before, "afile")


def test_folder_run_reports_and_skips_bad_files(tmp_path, audio_tok, cli):
    src = tmp_path / "in"
    write_wav(src / "a.wav", 1000)
    write_wav(src / "b.wav", 5)
    (src / "c.wav").write_text("text")
    write_wav(src / "d.wav", 44100, sr=44100, channels=2, subtype="PCM_24")
    res = cli("encode", src, "-m", audio_tok, "-o", tmp_path / "out", "--quiet")
    assert res.exit_code == 1
    errors = [line for line in res.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 2 and "b.wav" in errors[0] and "c.wav" in errors[1]
    assert "2 file(s) failed" in res.stderr and "Traceback" not in res.output
    assert listing(tmp_path / "out") == ["a.npy", "a.npy.json", "d.npy", "d.npy.json", "manifest.jsonl"]
    assert len((tmp_path / "out" / "manifest.jsonl").read_text().splitlines()) == 2


def test_stereo_24bit_96k_8k_are_not_errors(tmp_path, audio_tok, cli):
    for name, sr, ch, sub in [("s.wav", 44100, 2, "PCM_24"), ("h.wav", 96000, 1, "PCM_16"), ("l.wav", 8000, 1, "PCM_24")]:
        wav = write_wav(tmp_path / name, sr // 2, sr, ch, sub)
        assert cli("encode", wav, "-m", audio_tok).exit_code == 0, name


def test_wrong_modality(tmp_path, audio_tok, cli):
    from PIL import Image

    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "p.png")
    before = listing(tmp_path)
    res = cli("encode", tmp_path / "p.png", "-m", audio_tok, "-o", tmp_path / "p.npy")
    assert_clean_failure(res, tmp_path, before, "p.png", "audio tokenizer")
