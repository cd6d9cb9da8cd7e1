"""Shared test fixtures: paths to the shared data and a fixed seed."""

import multiprocessing as mp
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
def spawn_ranks():
    """run(target, args per rank, timeout): each rank in a spawned process; fails on a hang or a non-zero exit.

    Timeouts are generous: on a loaded shared machine importing torch in a fresh process can take a minute."""

    def run(target, rank_args: list[tuple], timeout: float) -> None:
        ctx = mp.get_context("spawn")
        procs = [ctx.Process(target=target, args=args) for args in rank_args]
        for p in procs:
            p.start()
        for p in procs:
            p.join(timeout=timeout)
        for p in procs:
            if p.is_alive():
                p.kill()
                pytest.fail(f"distributed workers hung (killed after {timeout} s)")
            assert p.exitcode == 0, f"worker exited with {p.exitcode}"

    return run


@pytest.fixture
def mnist_root() -> Path:
    return SHARED_DATA / "mnist"


@pytest.fixture
def fsdd_root() -> Path:
    return SHARED_DATA / "fsdd" / "recordings"
