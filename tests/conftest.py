"""Shared test fixtures: paths to the real data (testdata.py: the corpora or the repo's few files), a fixed seed."""

import multiprocessing as mp
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from testdata import SHARED_DATA

# The suite's numbers are CPU numbers (bit-exact resumes, CLI output against a CPU reference, one trained model
# against another): on a machine with a GPU, 'auto' still means the CPU here, and tests/test_cuda.py runs the CUDA
# paths on purpose (bench/gpu_check.sh runs both).
os.environ["VQTOK_DEVICE"] = "cpu"


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


@pytest.fixture
def tone_folder(tmp_path):
    """Nine short 8 kHz tones named like FSDD (digits 0-2, takes 0, 7, 8: take 0 is the fsdd rule's test split)."""
    root = tmp_path / "audio"
    root.mkdir()
    rng = np.random.default_rng(0)
    for digit in range(3):
        for take in (0, 7, 8):
            n = int(rng.integers(1500, 3000))
            wav = 0.3 * np.sin(2 * np.pi * (200 + 100 * digit) * np.arange(n) / 8000) * np.hanning(n)
            sf.write(root / f"{digit}_spk_{take}.wav", wav.astype(np.float32), 8000)
    return root
