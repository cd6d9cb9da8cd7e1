"""save_tokenizer / load_tokenizer: exact round trip, strict loading, clear errors, no pickle."""

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from vqtok import VqtokError, load_tokenizer, save_tokenizer
from vqtok.tokenizer import LevelConfig, TokenizerConfig, build_tokenizer


def trained_model(arch="vqvae2", dims=1):
    cfg = TokenizerConfig(
        arch=arch, dims=dims, sample_rate=8000 if dims == 1 else None,
        net=LevelConfig(channels=[8, 16], strides=[2, 2], res_depth=1, code_dim=4, codebook_size=16),
        top=LevelConfig(channels=[8], strides=[2], res_depth=1, code_dim=4, codebook_size=8) if arch == "vqvae2" else None,
    )
    model = build_tokenizer(cfg)
    model.train()(torch.randn(2, 1, 64) if dims == 1 else torch.rand(2, 1, 12, 12))
    return model.eval()


@pytest.mark.parametrize("arch,dims", [("vqvae", 1), ("vqvae2", 1), ("vqvae", 2), ("vqvae2", 2)])
def test_round_trip_gives_identical_outputs(tmp_path, arch, dims):
    model = trained_model(arch, dims)
    path = tmp_path / "tok.safetensors"
    fp = save_tokenizer(model, path, train_info={"recipe": "debug", "step": 5})
    loaded = load_tokenizer(path)
    assert loaded.fingerprint == fp == model.fingerprint
    assert loaded.train_info == {"recipe": "debug", "step": 5}
    assert loaded.config == model.config
    x = torch.randn(3, 1, 100) if dims == 1 else torch.rand(3, 1, 12, 16)
    with torch.no_grad():
        assert torch.equal(loaded(x).recon, model(x).recon)
    for name, value in model.state_dict().items():  # EMA buffers included
        assert torch.equal(loaded.state_dict()[name], value), name
    assert list(tmp_path.iterdir()) == [path]  # no temporary left behind


def test_fingerprint_depends_on_weights(tmp_path):
    a, b = trained_model(), trained_model()
    with torch.no_grad():
        b.decoder.net[0].weight.add_(1e-3)
    assert save_tokenizer(a, tmp_path / "a.safetensors") != save_tokenizer(b, tmp_path / "b.safetensors")


def test_missing_file(tmp_path):
    with pytest.raises(VqtokError, match="no such tokenizer file"):
        load_tokenizer(tmp_path / "nope.safetensors")


def test_not_a_checkpoint(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_text("hello, I am text")
    with pytest.raises(VqtokError, match="bad.safetensors: not a vqtok tokenizer checkpoint"):
        load_tokenizer(bad)
    other = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(other))  # a valid safetensors file from elsewhere
    with pytest.raises(VqtokError, match="other.safetensors: not a vqtok tokenizer checkpoint"):
        load_tokenizer(other)


def saved_with_metadata(tmp_path):
    """A saved tokenizer's path and its safetensors header metadata (to edit and write back)."""
    path = tmp_path / "tok.safetensors"
    save_tokenizer(trained_model(), path)
    with safe_open(str(path), framework="pt") as f:
        return path, dict(f.metadata())


def test_newer_format_version_is_refused(tmp_path):
    path, meta = saved_with_metadata(tmp_path)
    meta["format_version"] = "99"
    save_file(load_file(str(path)), str(path), metadata=meta)
    with pytest.raises(VqtokError, match="format version 99"):
        load_tokenizer(path)


def test_weights_that_do_not_fit_the_config(tmp_path):
    path, meta = saved_with_metadata(tmp_path)
    tensors = load_file(str(path))
    cfg = json.loads(meta["config"])
    cfg["net"]["code_dim"] = 5  # config no longer matches the weights
    meta["config"] = json.dumps(cfg)
    meta.pop("fingerprint")
    save_file(tensors, str(path), metadata=meta)
    with pytest.raises(VqtokError, match="weights do not fit the stored config"):
        load_tokenizer(path)


def test_unknown_config_key_is_named(tmp_path):
    path, meta = saved_with_metadata(tmp_path)
    cfg = json.loads(meta["config"])
    cfg["net"]["wings"] = 2
    meta["config"] = json.dumps(cfg)
    save_file(load_file(str(path)), str(path), metadata=meta)
    with pytest.raises(VqtokError, match="unknown key 'net.wings'"):
        load_tokenizer(path)
