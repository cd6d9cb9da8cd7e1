"""The export tool's refusals, and the cards kept in recipes/cards parse."""

from pathlib import Path

import pytest
import torch

from vqtok import VqtokError
from vqtok.config import to_dict
from vqtok.pretrained.export import (TOLERANCE, export_prior, export_tokenizer, load_card_input, main,
                                     tokenizer_recipe_check, within_tolerance)
from vqtok.tokenizer.recipe import load_recipe
from standins import CARD, _card

REPO = Path(__file__).resolve().parents[2]


def test_recipe_must_build_the_weights(work, tmp_path):
    with pytest.raises(VqtokError, match=r"speech-16k.yaml: does not build the exported tokenizer \(sample_rate: "
                                         r"16000 != 8000\)"):
        export_tokenizer(work / "speech-8k", "x", _card(work / "speech-16k.yaml"), tmp_path, "auto", 2, print)


def test_recipe_check_compares_the_architecture_not_the_quantizer_settings():
    recipe = REPO / "recipes" / "speech8k.yaml"
    config = to_dict(load_recipe(recipe).model)
    config["quantizer"]["dead_ratio"] = 0.3  # a later stage's training setting (an override)
    tokenizer_recipe_check(recipe, config)
    config["net"]["codebook_size"] = 2048
    with pytest.raises(VqtokError, match=r"speech8k.yaml: does not build the exported tokenizer "
                                         r"\(net.codebook_size: 1024 != 2048\)"):
        tokenizer_recipe_check(recipe, config)


def test_prior_needs_its_tokenizer_shipped_first(work, tmp_path):
    with pytest.raises(VqtokError, match="no shipped tokenizer was exported from tokenizer .*; export that "
                                         "tokenizer run first"):
        export_prior(work / "mnist_prior", "p", _card(work / "prior.yaml"), tmp_path, "auto", print)


def test_tolerance_rule():
    assert within_tolerance({"mse": 0.002, "psnr": 27.0}, {"mse": 0.002 * (1 + TOLERANCE["mse"] / 2), "psnr": 27.04})
    assert not within_tolerance({"si_snr": 6.0}, {"si_snr": 5.9})
    assert not within_tolerance({"nll": 2.5}, {"nll": float("nan")})


@pytest.fixture
def card(work):
    path = work / "card.yaml"
    path.write_text(f"description: x\ntraining_data: [{{name: d, licence: {CARD.training_data[0].licence}}}]\n")
    return path


def test_command_line_refuses_to_overwrite(shipped, work, card, capsys):
    assert main([str(work / "mnist"), "mnist", "--card", str(card), "--out", str(shipped)]) == 2
    assert "mnist.safetensors: already exists; pass --force" in capsys.readouterr().err


def test_command_line_threads(shipped, work, card, capsys):
    args = [str(work / "mnist"), "mnist", "--card", str(card), "--out", str(shipped)]
    before = torch.get_num_threads()
    try:
        assert main([*args, "--threads", "0"]) == 2
        assert capsys.readouterr().err.strip() == "error: --threads 0: must be at least 1"
        torch.set_num_threads(2)
        assert main([*args, "--threads", "1"]) == 2  # refused (exists), after the thread count was set
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("path", sorted((REPO / "recipes" / "cards").glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_cards_parse(path):
    data = load_card_input(path)
    assert data.recipe.startswith("recipes/") and data.description
    assert all(source.licence and source.attribution for source in data.training_data)
