"""The README runs as written: its two set-up commands, its downstream snippet and its quickstart."""

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner

from vqtok.cli import main

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text()


def section_block(title: str, lang: str) -> str:
    section = README.split(f"## {title}", 1)[1].split("\n## ", 1)[0]
    return re.search(rf"```{lang}\n(.*?)```", section, re.S).group(1)


def setup_commands() -> list[str]:
    return [line for line in section_block("Set-up", "bash").splitlines() if line.strip()]


def test_setup_is_two_commands_with_the_cpu_torch_note_and_ci_s_test_command() -> None:
    install, tests = setup_commands()
    assert install.startswith('pip install -e ".[dev,eval]" && vqtok encode examples/speech.flac && ')
    assert "download.pytorch.org/whl/cpu" in install.split("#", 1)[1]  # the CPU wheel, on the same line
    assert tests == "python -m pytest -q -p no:cacheprovider"
    assert tests.replace("python ", "python3 ") in (REPO / ".ci" / "run").read_text()
    for path in re.findall(r"examples/\S+\.(?:flac|png)", README):
        assert (REPO / path).is_file(), path


def test_no_dates_or_stage_diaries() -> None:
    assert not re.search(r"\b(19|20)[0-9]{2}\b|stage|\bround\b", README, re.I)
    assert len(README.splitlines()) <= 160


@pytest.fixture
def in_copy_of_examples(tmp_path, monkeypatch) -> Path:
    shutil.copytree(REPO / "examples", tmp_path / "examples")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_downstream_snippet_runs_and_matches_the_cli(in_copy_of_examples) -> None:
    runner = CliRunner()
    for line in section_block("Tokens for downstream models", "bash").splitlines():
        res = runner.invoke(main, shlex.split(line)[1:], catch_exceptions=False)
        assert res.exit_code == 0, (line, res.output)
    scope: dict = {}
    exec(compile(section_block("Tokens for downstream models", "python"), "README.md", "exec"), scope)  # noqa: S102
    codes, batch, tok = scope["codes"], scope["batch"], scope["tok"]
    # the snippet's own encoding is what `vqtok encode` wrote, code for code
    assert np.array_equal(codes.numpy(), np.load("speech_codes/speech.npy"))
    k = tok.codebook_size[0]
    assert batch["codes"].shape == (1, len(codes) + 2)  # BOS + codes + EOS
    assert batch["codes"][0, 0] == k + 1 and batch["codes"][0, -1] == k + 2
    assert torch.equal(batch["codes"][0, 1:-1], codes)
    assert scope["wave"].shape == (1, len(scope["waveform"]))


def quickstart_commands() -> list[list[str]]:
    lines = [line for line in section_block("Quickstart", "bash").splitlines() if line.startswith("vqtok ")]
    return [shlex.split(line.replace("../shared/data/fsdd/recordings", "fsdd/recordings"))[1:] for line in lines]


@pytest.fixture
def workdir(tmp_path, monkeypatch, fsdd_root):
    """tmp_path laid out like the repo: recipes/speech.yaml (shrunk to seconds), ten FSDD recordings."""
    rec = tmp_path / "fsdd" / "recordings"
    rec.mkdir(parents=True)
    for name in ["0_george_0", "1_jackson_1", "2_lucas_2", "3_nicolas_3", "4_yweweler_4", "5_george_10",
                 "6_jackson_20", "7_lucas_30", "8_nicolas_40", "9_yweweler_49"]:
        shutil.copy(fsdd_root / f"{name}.wav", rec)
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


@pytest.mark.slow
def test_quickstart_with_training(workdir):
    run_quickstart(workdir, train=True)


@pytest.mark.slow
def test_setup_commands_on_a_fresh_clone(tmp_path):
    """The README's two commands in a fresh clone (no ../shared beside it) and a fresh venv. The venv sees the
    system's site-packages (--system-site-packages) so that torch is not downloaded again; the package and its
    console script are installed into the venv by the command itself."""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("needs git and a git checkout to clone")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True, timeout=300)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=300)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(PATH=f"{venv / 'bin'}:{env['PATH']}", OMP_NUM_THREADS="1", VIRTUAL_ENV=str(venv))
    install, tests = setup_commands()
    res = subprocess.run(install, shell=True, cwd=clone, env=env, capture_output=True, text=True, timeout=1800)
    assert res.returncode == 0, res.stderr[-3000:]
    assert (clone / "examples" / "speech.decoded.wav").is_file()
    res = subprocess.run(tests, shell=True, cwd=clone, env=env, capture_output=True, text=True, timeout=3600)
    tail = res.stdout.strip().splitlines()[-1]
    assert res.returncode == 0 and " passed" in tail and "failed" not in tail and "error" not in tail, \
        res.stdout[-6000:]
