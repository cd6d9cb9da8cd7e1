"""The README quickstart and downstream-API snippet run as written (paths pointed at tmp_path)."""

import re
import shlex
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner

from vqtok.cli import main

REPO = Path(__file__).resolve().parents[1]
FSDD = REPO.parent / "shared" / "data" / "fsdd" / "recordings"
README = (REPO / "README.md").read_text()


def section_block(title: str, lang: str) -> str:
    section = README.split(f"## {title}", 1)[1].split("\n## ", 1)[0]
    return re.search(rf"```{lang}\n(.*?)```", section, re.S).group(1)


def quickstart_commands() -> list[list[str]]:
    lines = [line for line in section_block("Quickstart", "bash").splitlines() if line.startswith("vqtok ")]
    return [shlex.split(line.replace("../shared/data/fsdd/recordings", "fsdd/recordings"))[1:] for line in lines]


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """tmp_path laid out like the repo: recipes/speech.yaml (shrunk to seconds), a few FSDD recordings."""
    rec = tmp_path / "fsdd" / "recordings"
    rec.mkdir(parents=True)
    for name in ["0_george_0", "1_jackson_1", "2_lucas_2", "3_nicolas_3", "4_yweweler_4", "5_george_10",
                 "6_jackson_20", "7_lucas_30", "8_nicolas_40", "9_yweweler_49"]:
        shutil.copy(FSDD / f"{name}.wav", rec)
    recipe = yaml.safe_load((REPO / "recipes" / "speech.yaml").read_text())
    recipe["model"]["net"].update(channels=[8, 16], res_depth=1, code_dim=8, codebook_size=32)
    recipe["data"].update(root=str(rec), valid_items=4)
    recipe["train"].update(max_steps=2, batch_size=4, warmup_steps=1, log_every=1, valid_every=2, save_every=2)
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "speech.yaml").write_text(yaml.safe_dump(recipe))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def fake_training_run(run: Path) -> None:
    """What `vqtok train` leaves behind, without the training: tokenizer + recipe.yaml."""
    from vqtok import build_tokenizer, save_tokenizer
    from vqtok.config import to_dict
    from vqtok.tokenizer.recipe import load_recipe

    recipe = load_recipe("recipes/speech.yaml")
    torch.manual_seed(0)
    tok = build_tokenizer(recipe.model)
    tok.train()(torch.cumsum(torch.randn(4, 1, 4000), -1) * 0.05)
    run.mkdir(parents=True)
    save_tokenizer(tok.eval(), run / "tokenizer.safetensors", train_info={"recipe": recipe.name, "step": 0})
    (run / "recipe.yaml").write_text(yaml.safe_dump(to_dict(recipe)))


def run_quickstart(workdir: Path, train: bool) -> None:
    runner = CliRunner()
    commands = quickstart_commands()
    assert [c[0] for c in commands] == ["train", "info", "encode", "decode", "eval"]
    for args in commands:
        if args[0] == "train" and not train:
            fake_training_run(workdir / "runs" / "speech")
            continue
        res = runner.invoke(main, args, catch_exceptions=False)
        assert res.exit_code == 0, (args, res.output)
    assert len((workdir / "fsdd_codes" / "manifest.jsonl").read_text().splitlines()) == 10
    assert (workdir / "0_george_0.wav").is_file() and (workdir / "eval.json").is_file()


def test_quickstart_runs(workdir):
    pytest.importorskip("pesq", reason="PESQ needs the eval extra (pip install vqtok[eval])")
    run_quickstart(workdir, train=False)
    python = section_block("Tokens for downstream models", "python")
    python = python.replace("../shared/data/fsdd/recordings", "fsdd/recordings")
    scope: dict = {}
    exec(compile(python, "README.md", "exec"), scope)  # noqa: S102 - the README's own snippet
    batch = scope["batch"]
    assert batch["codes"].shape[0] == 10 and (batch["codes"][batch["mask"]] < 35).all()


@pytest.mark.slow
def test_quickstart_with_training(workdir):
    run_quickstart(workdir, train=True)
