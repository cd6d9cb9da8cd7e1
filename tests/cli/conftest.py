"""CLI test fixtures: a tiny audio tokenizer under tmp_path and a CliRunner wrapper."""

from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from clihelpers import make_tokenizer

from vqtok.cli import main


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """One torch thread: on a shared 2-core machine two OpenMP threads make small convs ~10x slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def audio_tok(tmp_path) -> Path:
    return make_tokenizer(tmp_path / "models" / "tok.safetensors")


@pytest.fixture
def cli():
    runner = CliRunner()

    def run(*args):
        return runner.invoke(main, [str(a) for a in args], catch_exceptions=False)

    return run
