"""CLI test fixtures: a tiny audio tokenizer under tmp_path and a CliRunner wrapper."""

from pathlib import Path

import pytest
from click.testing import CliRunner
from clihelpers import make_tokenizer

from vqtok.cli import main


@pytest.fixture
def audio_tok(tmp_path) -> Path:
    return make_tokenizer(tmp_path / "models" / "tok.safetensors")


@pytest.fixture
def cli():
    runner = CliRunner()

    def run(*args):
        return runner.invoke(main, [str(a) for a in args], catch_exceptions=False)

    return run
