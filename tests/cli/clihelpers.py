"""Helpers for the CLI tests: tiny tokenizers saved to a path, WAV writers, folder listings."""

from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from testdata import SHARED_DATA
from vqtok import save_tokenizer
from vqtok.tokenizer import LevelConfig, TokenizerConfig, build_tokenizer


def make_tokenizer(path: Path, arch="vqvae", dims=1, seed=0, codebook_size=64, level_db=None,
                   postfilter=None) -> Path:
    torch.manual_seed(seed)
    strides = [4, 5] if dims == 1 else [2, 2]
    cfg = TokenizerConfig(
        arch=arch, dims=dims, sample_rate=8000 if dims == 1 else None,
        net=LevelConfig(channels=[8, 16], strides=strides, res_depth=1, dilation_growth=3 if dims == 1 else 1,
                        code_dim=8, codebook_size=codebook_size),
        top=LevelConfig(channels=[16], strides=[2], res_depth=1, code_dim=8, codebook_size=32) if arch == "vqvae2" else None,
        level_db=level_db,
        postfilter=postfilter,
    )
    model = build_tokenizer(cfg)
    x = torch.cumsum(torch.randn(4, 1, 4000), -1) * 0.05 if dims == 1 else torch.rand(4, 1, 16, 16)
    model.train()(x)  # initialise the codebook
    path.parent.mkdir(parents=True, exist_ok=True)
    save_tokenizer(model.eval(), path, train_info={"recipe": "test", "step": 1})
    return path


def tone(n: int, sr: int = 8000, channels: int = 1, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / sr
    base = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.standard_normal(n)
    return np.stack([base * (1 - 0.2 * c) for c in range(channels)], 1).astype(np.float32)


def write_wav(path: Path, n: int, sr: int = 8000, channels: int = 1, subtype: str = "PCM_16", seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, tone(n, sr, channels, seed), sr, subtype=subtype)
    return path


def listing(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


SHARED_FSDD = SHARED_DATA / "fsdd" / "recordings"
