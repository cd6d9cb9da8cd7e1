"""What a new user's trial hit: slow start-up, compress's advice, error lines beside a progress bar, the MNIST
download hint, the training log's revived count."""

import json
import subprocess
import sys
from pathlib import Path

import torch
from click.testing import CliRunner
from clihelpers import make_tokenizer, write_wav

from vqtok import write_codes
from vqtok.cli import main
from vqtok.run import Progress, TrainConfig

REPO = Path(__file__).resolve().parents[2]


def test_help_and_models_do_not_import_torch() -> None:
    """`vqtok --help` and `vqtok models` need no model: torch (seconds to import) stays out."""
    code = ("import sys; from vqtok.cli import main\n"
            "for args in (['--help'], ['models'], ['train', '--help']):\n"
            "    try: main(args)\n"
            "    except SystemExit as e: assert e.code == 0, (args, e.code)\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "False"
    assert "speech-16k" in out.stdout and "mnist-prior" in out.stdout


def test_info_of_a_token_file_does_not_import_torch(tmp_path: Path) -> None:
    """`vqtok info FILE.npy` reads the token file and its sidecar alone (vqtok/codefile.py): no model, no torch."""
    from vqtok import load_tokenizer

    tok = load_tokenizer(make_tokenizer(tmp_path / "tok.safetensors"))
    write_codes(tmp_path / "a.npy", torch.arange(50) % 64, tok, {"kind": "audio", "length": 1000})
    code = ("import sys; from vqtok.cli import main\n"
            f"try: main(['info', {str(tmp_path / 'a.npy')!r}])\n"
            "except SystemExit as e: assert e.code == 0, e.code\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "False"
    assert "shape [50] int16, ids 0..49, 50 of 64 codes used" in out.stdout


def test_public_names_still_load_on_first_use() -> None:
    import vqtok

    assert vqtok.load_tokenizer.__module__.startswith("vqtok.tokenizer")
    assert "load_tokenizer" in dir(vqtok) and set(vqtok.__all__) <= set(dir(vqtok))


def test_compress_with_another_tokenizer_s_prior_asks_for_another_prior(tmp_path: Path) -> None:
    tok_path = make_tokenizer(tmp_path / "tok.safetensors")
    from vqtok import load_tokenizer

    tok = load_tokenizer(tok_path)
    codes = tmp_path / "a.npy"
    write_codes(codes, torch.zeros(50, dtype=torch.long), tok, {"kind": "audio", "length": 1000})
    res = CliRunner().invoke(main, ["compress", str(codes), "-p", "mnist-prior", "-o", str(tmp_path / "a.vqz")])
    assert res.exit_code == 2, res.output
    line = res.output.strip()
    assert len(line.splitlines()) == 1 and line.startswith(f"error: {codes}: made by")
    assert "prior" in line and "(-p)" in line and "pass the tokenizer" not in line
    assert not (tmp_path / "a.vqz").exists()


def test_an_error_line_beside_a_progress_bar_starts_its_own_line(tmp_path: Path) -> None:
    """stderr is not a terminal under CliRunner, as in a log file or a pipe."""
    tok = make_tokenizer(tmp_path / "tok.safetensors")
    folder = tmp_path / "in"
    for i in range(3):
        write_wav(folder / f"{i}.wav", 2000, seed=i)
    (folder / "1.wav").write_text("not audio")
    res = CliRunner().invoke(main, ["encode", str(folder), "-m", str(tok), "-o", str(tmp_path / "out")])
    assert res.exit_code == 1
    errors = [line for line in res.output.splitlines() if "error:" in line]
    assert len(errors) == 1 and errors[0].startswith(f"error: {folder / '1.wav'}"), res.output


def test_missing_mnist_names_the_command_line_setting(tmp_path: Path) -> None:
    res = CliRunner().invoke(main, ["train", str(REPO / "recipes" / "debug.yaml"), f"data.root={tmp_path / 'none'}",
                                    "--out", str(tmp_path / "run")])
    assert res.exit_code == 2
    assert "data.download=true" in res.output and len(res.output.strip().splitlines()) == 1, res.output


def test_revived_is_an_interval_total_and_the_log_says_over_how_many_steps(tmp_path: Path, capsys) -> None:
    cfg = TrainConfig(max_steps=4, log_every=2)
    with Progress(tmp_path, cfg, "t", 0, 4, show=False, sums=("revived",)) as log:
        for step in range(1, 5):
            log.train(step, {"loss": torch.tensor(float(step)), "revived": torch.tensor(600.0)}, 1e-3)
    printed = capsys.readouterr()
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["revived"], r["loss"]) for r in lines] == [(2, 1200.0, 1.5), (4, 1200.0, 3.5)]
    assert "revived 1200 in 2 steps" in printed.out + printed.err
