"""Staged recipes (vqtok/stages.py): the stages run by the runner equal the same stages run by hand, bit for bit,
also when the run is stopped inside a stage and resumed; the plan of a shipped staged recipe."""

from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner
from testdata import SHARED_DATA

from vqtok import load_tokenizer
from vqtok.cli import main
from vqtok.errors import VqtokError
from vqtok.stages import format_plan, read_stages, stage_dir, train_stages
from vqtok.tokenizer.recipe import load_recipe
from vqtok.tokenizer.train import train_tokenizer

REPO = Path(__file__).resolve().parents[1]
QUIET = {"train.valid_every": 100, "train.save_every": 100, "train.log_every": 2}
STAGES = [{"steps": 6, "where": "CPU"},
          {"steps": 5, "overrides": ["train.lr=5.0e-4", "train.warmup_steps=0"]},
          {"steps": 4, "freeze": "encoder", "note": "the decoder alone"}]


@pytest.fixture
def staged(tmp_path: Path) -> Path:
    recipe = yaml.safe_load((REPO / "recipes" / "debug.yaml").read_text())
    recipe["data"]["root"] = str(SHARED_DATA / "mnist")
    recipe["train"].update({k.split(".")[1]: v for k, v in QUIET.items()})
    recipe["stages"] = STAGES
    path = tmp_path / "staged.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def by_hand(staged: Path, out: Path) -> dict:
    """The three stages as a user would type them: train, then --init-from the last, decoder-only at the end."""
    base = out / "base.yaml"
    out.mkdir()
    data = yaml.safe_load(staged.read_text())
    data.pop("stages")
    base.write_text(yaml.safe_dump(data))
    train_tokenizer(load_recipe(base, ["train.max_steps=6"]), out / "1", progress=False)
    train_tokenizer(load_recipe(base, ["train.lr=5.0e-4", "train.warmup_steps=0", "train.max_steps=5"]), out / "2",
                    init_from=str(out / "1" / "tokenizer.safetensors"), progress=False)
    model = train_tokenizer(load_recipe(base, ["loss.decoder_only=true", "train.max_steps=4"]), out / "3",
                            init_from=str(out / "2" / "tokenizer.safetensors"), progress=False)
    return model.state_dict()


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name, value in a.items():
        assert torch.equal(b[name], value), name


def test_three_stages_equal_the_stages_run_by_hand_and_resume_inside_a_stage(staged: Path, tmp_path: Path) -> None:
    hand = by_hand(staged, tmp_path / "hand")
    last = train_stages(staged, tmp_path / "run", progress=False, echo=lambda line: None)
    assert last == stage_dir(tmp_path / "run", 3) / "tokenizer.safetensors"
    assert_same(hand, load_tokenizer(last).state_dict())
    assert_same(hand, load_tokenizer(tmp_path / "run" / "tokenizer.safetensors").state_dict())
    # the decoder-only stage kept stage 2's encoder and codebook
    two = load_tokenizer(stage_dir(tmp_path / "run", 2) / "tokenizer.safetensors").state_dict()
    assert all(torch.equal(two[k], hand[k]) for k in hand if not k.startswith("decoder"))
    # one step axis over the stages for vqtok plot
    steps = [line for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines() if '"train"' in line]
    assert [yaml.safe_load(s)["step"] for s in steps] == [2, 4, 6, 8, 10, 11, 13, 15]

    # stopped inside stage 2 (as Ctrl-C leaves it: state at step 3), then --resume
    run = tmp_path / "stopped"
    train_stages(staged, run, only=1, progress=False, echo=lambda line: None)
    recipe = load_recipe(run / "base.yaml", ["train.lr=5.0e-4", "train.warmup_steps=0", "train.max_steps=5"])
    train_tokenizer(recipe, stage_dir(run, 2), init_from=str(stage_dir(run, 1) / "tokenizer.safetensors"),
                    stop_after=3, progress=False)
    said: list[str] = []
    train_stages(staged, run, resume=True, progress=False, echo=said.append)
    assert said[0].startswith("stage 1/3: done") and said[1].startswith("stage 2/3: resuming")
    assert_same(hand, load_tokenizer(run / "tokenizer.safetensors").state_dict())


def test_stage_checks(staged: Path, tmp_path: Path) -> None:
    with pytest.raises(VqtokError, match="stage 2 starts from stage 1, which has not finished"):
        train_stages(staged, tmp_path / "a", only=2, progress=False, echo=lambda line: None)
    bad = tmp_path / "bad.yaml"
    bad.write_text(staged.read_text().replace("freeze: encoder", "freeze: codebook"))
    with pytest.raises(VqtokError, match="stage 3: freeze 'codebook'; choose one of encoder"):
        read_stages(bad)
    bad.write_text(staged.read_text().replace("steps: 6", "stepz: 6"))
    with pytest.raises(VqtokError, match="stage 1: .*stepz"):
        read_stages(bad)


@pytest.mark.parametrize("name, count", [("speech16k", 20), ("speech8k", 23)])
def test_the_shipped_speech_recipes_print_their_stages(name: str, count: int) -> None:
    res = CliRunner().invoke(main, ["train", str(REPO / "recipes" / f"{name}.yaml"), "--dry-run"])
    assert res.exit_code == 0, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == count and lines[0].startswith("stage 1 [CPU")
    assert any("H200" in line for line in lines) and any("loss.decoder_only=true" in line for line in lines)
    assert format_plan(read_stages(REPO / "recipes" / f"{name}.yaml")[1]).count("\n") == count - 1


def test_command_line_runs_resumes_and_plots_a_staged_run(staged: Path, tmp_path: Path) -> None:
    short = tmp_path / "short.yaml"
    data = yaml.safe_load(staged.read_text())
    data["stages"] = [{"steps": 2}, {"steps": 2, "freeze": "encoder"}]
    short.write_text(yaml.safe_dump(data))
    run = tmp_path / "run"
    res = CliRunner().invoke(main, ["train", str(short), "--out", str(run), "--quiet"])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(main, ["train", "--resume", str(run), "--quiet"])
    assert res.exit_code == 0 and "stage 2/2: done" in res.output, res.output
    assert CliRunner().invoke(main, ["plot", str(run)]).exit_code == 0 and (run / "curves.png").is_file()
    res = CliRunner().invoke(main, ["train", str(short), "--out", str(run), "--quiet"])
    assert res.exit_code == 2 and "--resume" in res.output
