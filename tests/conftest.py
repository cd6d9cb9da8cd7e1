"""Shared test fixtures: paths to the shared data and a fixed seed."""

from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


# Small convolutions run faster on one thread than on two busy ones (OpenMP barriers on a shared
# 2-core machine cost more than they save); tests that need more threads set them themselves.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def mnist_root() -> Path:
    return SHARED_DATA / "mnist"


@pytest.fixture
def fsdd_root() -> Path:
    return SHARED_DATA / "fsdd" / "recordings"
