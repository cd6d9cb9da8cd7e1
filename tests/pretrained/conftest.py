"""Fixtures: stand-in shipped models (built once per session) and a registry pointed at them."""

from pathlib import Path

import pytest
from standins import build_standins

import vqtok.registry as registry


@pytest.fixture(scope="session")
def standin_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("standins")
    return build_standins(root / "models", root / "work")


@pytest.fixture
def shipped(standin_dir, monkeypatch) -> Path:
    """The registry holds the stand-ins (speech-16k, speech-8k, mnist, mnist-prior) for this test."""
    monkeypatch.setattr(registry, "MODELS_DIR", standin_dir)
    return standin_dir


@pytest.fixture
def work(standin_dir) -> Path:
    """The stand-ins' runs and recipes (standin_dir's sibling)."""
    return standin_dir.parent / "work"
