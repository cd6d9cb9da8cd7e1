"""The models shipped in the package: each card's recipe rebuilds its architecture, sizes, speed, a default run."""

import time
from pathlib import Path

import pytest
import torch

import vqtok
from testdata import SHARED_DATA
from vqtok.cli.models import format_shipped_card
from vqtok.config import differences, to_dict
from vqtok import registry
from vqtok.modality import MODALITIES
from vqtok.pretrained.export import parameter_count, prior_recipe_check, recipe_model_config
from vqtok.prior.checkpoint import load_prior
from vqtok.prior.model import CodePrior
from vqtok.prior.recipe import load_prior_recipe
from vqtok.tokenizer.checkpoint import architecture
from vqtok.tokenizer.recipe import load_recipe

REPO = Path(__file__).resolve().parents[2]
SHIPPED = registry.names()  # the package's own data (collected before any test re-points the registry)


def check_rebuilds(model: registry.ShippedModel, recipe_file: Path, tmp_path: Path) -> None:
    """recipe_file (and the recipe stored in the file) build the architecture and parameter count of the weights."""
    stored = tmp_path / f"{model.name}-stored.yaml"
    stored.write_text(model.recipe)
    for recipe in (recipe_file, stored):
        if model.role == "tokenizer":
            tok = vqtok.load_tokenizer(model.path)
            built = vqtok.build_tokenizer(recipe_model_config(recipe))
            built_arch, stored_arch = architecture(to_dict(built.config)), architecture(to_dict(tok.config))
            assert differences(built_arch, stored_arch) == [], recipe
            assert parameter_count(built) == parameter_count(tok) == model.card["parameters"]
        else:
            prior = load_prior(model.path)
            prior_recipe_check(recipe, prior)
            built = CodePrior(prior.layout, dict(load_prior_recipe(recipe).model.config))
            assert parameter_count(built) == parameter_count(prior) == model.card["parameters"]


def test_standin_cards_rebuild(shipped, tmp_path):
    for name in registry.names():
        model = registry.get(name)
        check_rebuilds(model, Path(model.card["recipe"]), tmp_path)


@pytest.mark.parametrize("name", SHIPPED or ["none"])
def test_card_recipe_rebuilds(name, tmp_path):
    model = registry.get(name)
    card = model.card
    for key in ("modality", "codebooks", "parameters", "training_data", "recipe", "step", "quality", "storage"):
        assert key in card, key
    assert all(d["licence"] and d["attribution"] for d in card["training_data"])
    check_rebuilds(model, REPO / card["recipe"], tmp_path)


def test_the_named_models_ship():
    """The defaults of vqtok encode and the names the README and prior recipes use are package data."""
    defaults = {m.default_model for m in MODALITIES if m.default_model}
    assert defaults | {"speech-8k", "fsdd", "mnist-prior"} <= set(SHIPPED)


def test_sizes_and_speed():
    """All weights under 40 MB; each tokenizer loads and encodes its first input in under a second."""
    assert sum(registry.get(n).megabytes for n in SHIPPED) < 40
    torch.set_num_threads(1)
    for name in registry.names("tokenizer"):
        start = time.perf_counter()
        tok = vqtok.load_tokenizer(name)
        x = torch.zeros(1, tok.sample_rate) if tok.dims == 1 else torch.zeros(1, 28, 28)
        tok.encode(x)
        assert time.perf_counter() - start < 1.0, name


def test_default_run_on_the_package_data(tmp_path, monkeypatch):
    """The fresh-install commands on the real shipped models, in-process."""
    from test_default_models import test_default_run

    test_default_run(registry.MODELS_DIR, tmp_path, monkeypatch)


def test_the_speech_models_encode_at_their_level_and_their_cards_say_so():
    for name in ("speech-8k", "speech-16k"):
        assert vqtok.load_tokenizer(name).level_db == -24.0
        assert "scaled to -24 dBFS speech level by vqtok encode" in format_shipped_card(registry.get(name))
    assert vqtok.load_tokenizer("fsdd").level_db is None
    assert "scaled to" not in format_shipped_card(registry.get("fsdd"))


def test_batched_mnist_codes_equal_one_by_one_and_few_go_back_alone(monkeypatch):
    """encode_batch re-encodes alone only images with a latent within float noise of a code cell's boundary: on
    the shipped mnist and real digits that is a few percent (1.3% of 1,000 when measured), not most of them."""
    from vqtok.data.mnist import load_mnist

    tok = vqtok.load_tokenizer("mnist")
    images, _ = load_mnist(SHARED_DATA / "mnist", "test")
    items = list(torch.from_numpy(images[:300]).float()[:, None] / 255)  # (1, 28, 28) each
    with torch.no_grad():
        alone = [tok.encode(x[None])[0] for x in items]
    sizes = []
    real = tok.encode_padded
    monkeypatch.setattr(tok, "encode_padded", lambda x, **kw: sizes.append(x.shape[0]) or real(x, **kw))
    batched = tok.encode_batch(items, batch_size=100)
    assert all(torch.equal(a, b) for a, b in zip(alone, batched))
    assert sizes.count(100) == 3  # three batches of 100, then the ones alone
    assert sizes.count(1) <= 15  # at most 5% alone
