"""Tiny stand-ins for the shipped models (untrained or trained for a few steps), exported with the real tool.

They carry the shipped names (speech-16k, speech-8k, fsdd, mnist, mnist-prior) so the default-model paths run
end to end while the package holds no weights (and in tests that must not depend on the real ones).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
import yaml

from testdata import SHARED_DATA
from vqtok.config import to_dict
from vqtok.pretrained.export import CardInput, DataSource, export_prior, export_tokenizer
from vqtok.prior.recipe import load_prior_recipe
from vqtok.prior.train import train_prior
from vqtok.tokenizer.recipe import load_recipe
from vqtok.tokenizer import build_tokenizer, save_tokenizer

REPO = Path(__file__).resolve().parents[2]
SHARED = SHARED_DATA
CARD = CardInput(description="stand-in for tests", training_data=[DataSource("test data", "CC0", "nobody")])


def audio_recipe(sample_rate: int, root: Path) -> dict:
    recipe = yaml.safe_load((REPO / "recipes" / "speech.yaml").read_text())
    recipe["name"] = f"standin_{sample_rate}"
    recipe["model"].update(sample_rate=sample_rate)
    recipe["model"]["net"].update(channels=[8, 16], strides=[4, 5], res_depth=1, code_dim=8, codebook_size=32)
    recipe["data"].update(root=str(root), rule="fsdd", valid_items=4)
    return recipe


def tokenizer_run(recipe_file: Path, run: Path, seed: int = 0) -> Path:
    """What vqtok train leaves (tokenizer.safetensors + recipe.yaml), with a codebook set by one forward pass."""
    recipe = load_recipe(recipe_file)
    torch.manual_seed(seed)
    tok = build_tokenizer(recipe.model)
    if tok.dims == 1:
        x = torch.cumsum(torch.randn(4, 1, 8000), -1) * 0.02
    else:
        x = torch.rand(8, 1, 28, 28)
    tok.train()(x)
    run.mkdir(parents=True, exist_ok=True)
    save_tokenizer(tok.eval(), run / "tokenizer.safetensors", train_info={"recipe": recipe.name, "step": 1})
    (run / "recipe.yaml").write_text(yaml.safe_dump(to_dict(recipe), sort_keys=False))
    return run


def build_standins(models: Path, work: Path, names: tuple[str, ...] = ("speech-16k", "speech-8k", "mnist",
                                                                        "mnist-prior")) -> Path:
    """Export stand-ins for `names` into the folder `models`; `work` holds their runs and recipes."""
    work.mkdir(parents=True, exist_ok=True)
    quiet = lambda line: None  # noqa: E731
    clips = work / "fsdd"  # a few test takes (0-4) and training takes: measuring reads only these
    clips.mkdir(exist_ok=True)
    for clip in ("0_george_0", "1_jackson_1", "2_lucas_2", "3_nicolas_3", "4_yweweler_5"):
        shutil.copy(SHARED / "fsdd" / "recordings" / f"{clip}.wav", clips)
    for name, rate in (("speech-16k", 16000), ("speech-8k", 8000), ("fsdd", 8000)):
        if name in names:
            recipe = work / f"{name}.yaml"
            recipe.write_text(yaml.safe_dump(audio_recipe(rate, clips)))
            run = tokenizer_run(recipe, work / name)
            export_tokenizer(run, name, _card(recipe), models, "auto", 4, quiet)
    if "mnist" in names or "mnist-prior" in names:
        recipe = work / "mnist.yaml"  # debug.yaml on the digits testdata.py finds (measuring reads its test split)
        data = yaml.safe_load((REPO / "recipes" / "debug.yaml").read_text())
        data["data"]["root"] = str(SHARED / "mnist")
        recipe.write_text(yaml.safe_dump(data))
        run = tokenizer_run(recipe, work / "mnist")
        export_tokenizer(run, "mnist", _card(recipe), models, "auto", 16, quiet)
        if "mnist-prior" in names:
            prior_file = work / "prior.yaml"
            data = yaml.safe_load((REPO / "recipes" / "mnist_prior.yaml").read_text())
            data.update(name="standin_prior", tokenizer=str(run), samples=0)
            data["model"]["config"] = {"channels": 8, "layers": 2, "kernel_size": 3}
            data["data"].update(root=str(SHARED / "mnist"), max_items=64, valid_items=16)
            data["train"].update(max_steps=2, batch_size=8, warmup_steps=1, log_every=1, valid_every=2,
                                 save_every=2, precision="fp32")
            prior_file.write_text(yaml.safe_dump(data))
            train_prior(load_prior_recipe(prior_file), work / "mnist_prior", progress=False, plot=False)
            export_prior(work / "mnist_prior", "mnist-prior", _card(prior_file), models, "auto", quiet)
    return models


def _card(recipe: Path) -> CardInput:
    return CardInput(CARD.description, CARD.training_data, recipe=str(recipe), quality={"note": "stand-in"})
