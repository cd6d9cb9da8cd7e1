"""Names wherever a tokenizer or prior is taken: the registry, the path-wins rule, errors listing the names."""

import json

import pytest
import torch
from safetensors import safe_open

import vqtok
from vqtok import VqtokError
from vqtok import registry
from vqtok.tokenizer.checkpoint import tokenizer_file


def test_names_and_cards(shipped):
    assert registry.names() == ["mnist", "mnist-prior", "speech-16k", "speech-8k"]
    assert registry.names("prior") == ["mnist-prior"]
    card = registry.get("speech-8k").card
    assert (card["modality"], card["sample_rate"], card["codebooks"]) == ("audio", 8000, [32])
    assert card["frame_rate"] == [400.0] and card["bitrate"] == 2000.0  # 8000 / 20 hops x 5 bits
    assert card["training_data"][0]["licence"] == "CC0" and card["recipe"].endswith("speech-8k.yaml")
    mnist = registry.get("mnist").card
    assert mnist["image_size"] == [28, 28] and mnist["code_shape"] == [[7, 7]] and mnist["bits_per_image"] == 245.0


def test_load_by_name(shipped):
    tok = vqtok.load_tokenizer("speech-8k")
    assert tok.sample_rate == 8000 and tok.name == "speech-8k"
    assert tok.fingerprint == registry.get("speech-8k").fingerprint
    assert tokenizer_file("mnist") == shipped / "mnist.safetensors"


def test_a_path_wins_over_a_name(shipped, tmp_path, monkeypatch, work):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mnist").mkdir()
    (tmp_path / "mnist" / "tokenizer.safetensors").write_bytes((work / "speech-8k" / "tokenizer.safetensors").read_bytes())
    assert tokenizer_file("mnist").resolve() == tmp_path / "mnist" / "tokenizer.safetensors"
    assert vqtok.load_tokenizer("mnist").dims == 1  # the folder's audio tokenizer, not the shipped mnist


def test_unknown_name_lists_the_names(shipped):
    with pytest.raises(VqtokError, match=r"'speech-44k' is not a shipped tokenizer name \(mnist, speech-16k, "
                                         r"speech-8k\)"):
        vqtok.load_tokenizer("speech-44k")
    with pytest.raises(VqtokError, match="'mnist-prior' is a shipped prior, not a tokenizer"):
        vqtok.load_tokenizer("mnist-prior")
    with pytest.raises(VqtokError, match="no such tokenizer file"):  # a path-like stays a path
        vqtok.load_tokenizer("runs/speech-44k")


def test_fp16_storage_and_fingerprint(shipped, work):
    """Parameters and codebooks are stored fp16, EMA statistics fp32; the fingerprint is the shipped file's."""
    path = shipped / "speech-16k.safetensors"
    with safe_open(str(path), framework="pt") as f:
        dtypes = {k: f.get_tensor(k).dtype for k in f.keys()}
        meta = f.metadata()
    assert dtypes["quantizer.codebook"] == torch.float16 and dtypes["quantizer.cluster_size"] == torch.float32
    assert dtypes["encoder.net.0.weight"] == torch.float16
    source = vqtok.load_tokenizer(work / "speech-16k")
    tok = vqtok.load_tokenizer("speech-16k")
    card = json.loads(meta["card"])
    assert card["storage"] == {**card["storage"], "dtype": "float16", "source_fingerprint": source.fingerprint}
    assert tok.fingerprint == meta["fingerprint"] != source.fingerprint
    for (name, a), b in zip(tok.state_dict().items(), source.state_dict().values()):
        want = b.half().float() if dtypes[name] == torch.float16 else b
        assert a.dtype == b.dtype and torch.equal(a, want), name  # loaded back to fp32 exactly
    assert card["storage"]["codes_agreeing_with_fp32"] > 0.9


def test_prior_recipe_takes_a_shipped_tokenizer(shipped, tmp_path, work):
    import yaml

    from vqtok.prior.recipe import load_prior_recipe
    from vqtok.prior.train import train_prior

    data = yaml.safe_load((work / "prior.yaml").read_text())
    data["tokenizer"] = "mnist"
    data["train"]["max_steps"] = 1
    (tmp_path / "prior.yaml").write_text(yaml.safe_dump(data))
    priors = train_prior(load_prior_recipe(tmp_path / "prior.yaml"), tmp_path / "run", progress=False, plot=False)
    assert priors["codes"].tokenizer["fingerprint"] == registry.get("mnist").fingerprint
    assert (tmp_path / "run" / "tokenizer.safetensors").read_bytes() == (shipped / "mnist.safetensors").read_bytes()


def test_sample_by_name(shipped):
    from vqtok.prior.generate import load_prior_run

    priors, tok, tok_path = load_prior_run("mnist-prior")
    assert tok_path == shipped / "mnist.safetensors" and priors[0].layout.num_classes == 10
    with pytest.raises(VqtokError, match="'mnist' is a shipped tokenizer, not a prior"):
        load_prior_run("mnist")
