"""Recipe schema: dataclasses that a tokenizer recipe YAML maps onto one to one."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from vqtok.config import apply_overrides, from_dict, load_yaml
from vqtok.errors import VqtokError
from vqtok.tokenizer.base import TokenizerConfig


@dataclass
class DataConfig:
    """Where the training data lives and how items are cut."""

    kind: str = "mnist"  # mnist | audio | images
    root: str = "data"  # relative paths are resolved against the current directory
    download: bool = False  # mnist: fetch the files (MD5-checked) when missing
    pad_to: int | None = None  # mnist: zero-pad 28x28 to this size
    segment_seconds: float = 0.5  # audio: random training crops of this length
    rule: str | None = "hash"  # audio: label/split rule from file names ("fsdd", "fsdd_speaker", "folders", "hash")
    concat: bool = False  # audio: fill crops with several clips and random silences (no padding)
    max_gap_seconds: float = 0.2  # audio with concat: longest silence between clips
    gain_db: float = 0.0  # audio: random gain in [-gain_db, +gain_db] dB per training crop
    image_size: list[int] | None = None  # images: [H, W] after resize + centre crop
    channels: int = 1  # images: 1 (grey) or 3 (RGB)
    valid_items: int = 1000  # size of the fixed validation set (first items of the test split)
    num_workers: int = 0


@dataclass
class LossConfig:
    """Reconstruction loss weights. Images use `mse`; audio uses `l1` + `stft`."""

    mse: float = 1.0
    l1: float = 1.0
    stft: float = 1.0
    fft_sizes: list[int] = field(default_factory=lambda: [128, 256, 512, 1024])


@dataclass
class TrainConfig:
    max_steps: int = 1000
    batch_size: int = 64  # per process
    lr: float = 3e-4
    weight_decay: float = 0.0
    warmup_steps: int = 200
    min_lr_ratio: float = 0.05  # cosine decays to lr * min_lr_ratio
    grad_clip: float = 1.0
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "auto"  # auto (bf16 autocast on CUDA) | fp32 | bf16
    log_every: int = 50
    valid_every: int = 500
    save_every: int = 500
    threads: int | None = None  # torch CPU threads (None: torch's default)


@dataclass
class Recipe:
    """A tokenizer recipe: model + data + loss + training loop settings."""

    name: str = "tokenizer"
    task: str = "tokenizer"
    model: TokenizerConfig = field(default_factory=TokenizerConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


TASKS = ("tokenizer", "prior")


def load_recipe_dict(path: str | Path, overrides: list[str] | None = None) -> dict:
    """YAML + `key.sub=value` overrides -> dict (validated by the task's schema)."""
    data = apply_overrides(load_yaml(path), list(overrides or []))
    task = data.get("task", "tokenizer")
    if task not in TASKS:
        raise VqtokError(f"{path}: unknown task '{task}'; choose one of {', '.join(TASKS)}")
    return data


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Strictly load a tokenizer recipe; errors name the file and the offending key."""
    data = load_recipe_dict(path, overrides)
    try:
        return from_dict(Recipe, data)
    except VqtokError as err:
        raise VqtokError(f"{path}: {err}") from None
