"""Token files: .npy/.npz + JSON sidecar round trip, dtype rule, and every refusal with a clear message."""

import json

import numpy as np
import pytest
import torch

from vqtok import VqtokError, read_codes, save_tokenizer, write_codes
from vqtok.tokenizer import LevelConfig, TokenizerConfig, build_tokenizer
from vqtok.tokenizer.codes import code_dtype, is_complete, read_sidecar, sidecar_path


def saved(tmp_path, arch="vqvae", dims=1, codebook_size=32, seed=0, name="tok.safetensors"):
    torch.manual_seed(seed)
    cfg = TokenizerConfig(
        arch=arch, dims=dims, sample_rate=8000 if dims == 1 else None,
        net=LevelConfig(channels=[4, 8], strides=[2, 2], res_depth=1, code_dim=4, codebook_size=codebook_size),
        top=LevelConfig(channels=[8], strides=[2], res_depth=1, code_dim=4, codebook_size=8) if arch == "vqvae2" else None,
    )
    model = build_tokenizer(cfg).eval()
    save_tokenizer(model, tmp_path / name)
    return model


def audio_source(n):
    return {"kind": "audio", "path": "a.wav", "length": n, "sample_rate": 8000, "orig_sample_rate": 8000,
            "channels": 1, "orig_frames": n, "duration": n / 8000}


def test_single_level_audio_round_trip(tmp_path):
    tok = saved(tmp_path)
    with torch.no_grad():
        codes = tok.encode(torch.randn(101))
    path = tmp_path / "a.npy"
    written = write_codes(path, codes, tok, audio_source(101), label=3)
    side = sidecar_path(path)
    assert side == tmp_path / "a.npy.json" and written == json.loads(side.read_text()) == read_sidecar(path)
    raw = np.load(path, allow_pickle=False)
    assert raw.dtype == np.int16 and raw.shape == (26,)
    meta = json.loads(side.read_text())
    assert meta["tokenizer"]["fingerprint"] == tok.fingerprint and meta["label"] == 3
    assert meta["levels"] == [{"name": "codes", "shape": [26], "dtype": "int16"}]
    file = read_codes(path, tok)
    assert np.array_equal(file.levels[0], codes.numpy()) and file.levels[0].dtype == np.int64
    assert file.size == 101 and file.label == 3
    assert is_complete(path, tok.fingerprint) and not is_complete(path, "other")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npy", "a.npy.json", "tok.safetensors"]  # no temporaries


def test_hierarchical_writes_npz_with_one_array_per_level(tmp_path):
    tok = saved(tmp_path, arch="vqvae2", dims=2)
    img = torch.rand(1, 12, 20)
    with torch.no_grad():
        top, bottom = tok.encode(img)
    path = tmp_path / "img.npz"
    write_codes(path, [top, bottom], tok, {"kind": "image", "path": "x.png", "size": [12, 20], "channels": 1})
    with np.load(path, allow_pickle=False) as z:
        assert sorted(z.files) == ["bottom", "top"]
        assert z["top"].shape == (2, 3) and z["bottom"].shape == (4, 6) and z["top"].dtype == np.int16
    file = read_codes(path, tok)
    assert np.array_equal(file.levels[0], top.numpy()) and np.array_equal(file.levels[1], bottom.numpy())
    assert file.size == (12, 20)
    with pytest.raises(VqtokError, match=r"writes \.npz"):
        write_codes(tmp_path / "img.npy", [top, bottom], tok, {"kind": "image", "size": [12, 20]})


def test_dtype_is_int32_for_large_codebooks(tmp_path):
    assert code_dtype(32768) == np.int16 and code_dtype(32769) == np.int32
    tok = saved(tmp_path, codebook_size=40000)
    codes = torch.tensor([0, 39999, 5])
    write_codes(tmp_path / "big.npy", codes, tok, audio_source(12))
    assert np.load(tmp_path / "big.npy").dtype == np.int32
    assert read_codes(tmp_path / "big.npy", tok).levels[0].tolist() == [0, 39999, 5]


@pytest.fixture
def written(tmp_path):
    tok = saved(tmp_path)
    codes = torch.arange(26) % 32
    path = tmp_path / "c.npy"
    write_codes(path, codes, tok, audio_source(101))
    return tok, path


def rewrite(path, array):
    """Replace the array and re-hash the sidecar so that only the content check can object."""
    from vqtok.tokenizer.codes import _file_sha256

    with open(path, "wb") as f:
        np.save(f, array, allow_pickle=True)
    side = sidecar_path(path)
    meta = json.loads(side.read_text())
    meta["array_sha256"] = _file_sha256(path)
    side.write_text(json.dumps(meta))


def one_line(err):
    msg = str(err.value)
    assert "\n" not in msg
    return msg


def test_refuses_codes_from_another_tokenizer_naming_both(written, tmp_path):
    tok, path = written
    other = saved(tmp_path, seed=1, codebook_size=64, name="other.safetensors")
    with pytest.raises(VqtokError) as err:
        read_codes(path, other)
    msg = one_line(err)
    assert "c.npy" in msg and tok.fingerprint in msg and other.fingerprint in msg and "64" in msg


def test_refuses_ids_out_of_range(written):
    tok, path = written
    rewrite(path, np.array([0, 1, 32] + [0] * 23, dtype=np.int16))
    with pytest.raises(VqtokError, match=r"ids 0\.\.32, outside the 32-code codebook") as err:
        read_codes(path, tok)
    assert "c.npy" in one_line(err)
    rewrite(path, np.array([-1] + [0] * 25, dtype=np.int16))
    with pytest.raises(VqtokError, match="outside"):
        read_codes(path, tok)


def test_refuses_wrong_dtype_and_shape(written):
    tok, path = written
    rewrite(path, np.zeros(26, dtype=np.float32))
    with pytest.raises(VqtokError, match="dtype float32; codes must be integers"):
        read_codes(path, tok)
    rewrite(path, np.zeros((2, 13), dtype=np.int16))
    with pytest.raises(VqtokError, match=r"shape \[2, 13\], the sidecar says \[26\]"):
        read_codes(path, tok)


def test_refuses_shapes_that_do_not_fit_the_input_length(written):
    tok, path = written
    rewrite(path, np.zeros(20, dtype=np.int16))
    meta = json.loads(sidecar_path(path).read_text())
    meta["levels"][0]["shape"] = [20]
    sidecar_path(path).write_text(json.dumps(meta))
    with pytest.raises(VqtokError, match=r"do not fit an input of size 101"):
        read_codes(path, tok)
    del meta["source"]["length"]
    meta["source"]["size"] = [10, 10]  # an image's size in an audio token file
    sidecar_path(path).write_text(json.dumps(meta))
    with pytest.raises(VqtokError, match=r"input size \[10, 10\] does not fit this tokenizer"):
        read_codes(path, tok)


def test_refuses_pickled_arrays(written):
    tok, path = written
    rewrite(path, np.array([{"evil": 1}], dtype=object))
    with pytest.raises(VqtokError, match="not a readable codes array"):
        read_codes(path, tok)


def test_refuses_replaced_array_and_missing_or_bad_sidecar(written):
    tok, path = written
    with open(path, "wb") as f:
        np.save(f, np.ones(26, dtype=np.int16))
    with pytest.raises(VqtokError, match="does not match its sidecar"):
        read_codes(path, tok)
    sidecar_path(path).write_text("{not json")
    with pytest.raises(VqtokError, match="unreadable sidecar"):
        read_codes(path, tok)
    sidecar_path(path).unlink()
    with pytest.raises(VqtokError, match=r"no sidecar c\.npy\.json"):
        read_codes(path, tok)


def test_write_refuses_bad_codes(tmp_path):
    tok = saved(tmp_path)
    with pytest.raises(VqtokError, match="outside"):
        write_codes(tmp_path / "x.npy", torch.full((26,), 32), tok, audio_source(101))
    with pytest.raises(VqtokError, match="integers"):
        write_codes(tmp_path / "x.npy", torch.zeros(26), tok, audio_source(101))
    with pytest.raises(VqtokError, match="do not fit"):
        write_codes(tmp_path / "x.npy", torch.zeros(5, dtype=torch.long), tok, audio_source(101))
    assert not (tmp_path / "x.npy").exists()
