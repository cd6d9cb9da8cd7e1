"""Tokenizer recipe schema: dataclasses that a tokenizer recipe YAML maps onto one to one."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from vqtok.config import apply_overrides, from_dict, load_yaml
from vqtok.data.build import DataSource
from vqtok.errors import VqtokError
from vqtok.run import TASKS, TrainConfig
from vqtok.tokenizer.base import TokenizerConfig
from vqtok.tokenizer.discriminators import AdversarialConfig


@dataclass
class DataConfig(DataSource):
    """Where the training data lives (DataSource) and how training items are cut."""

    segment_seconds: float = 0.5  # audio: random training crops of this length
    concat: bool = False  # audio: fill crops with several clips and random silences (no padding)
    max_gap_seconds: float = 0.2  # audio with concat: longest silence between clips
    gain_db: float = 0.0  # audio: random gain in [-gain_db, +gain_db] dB per training crop (after data.level_db)
    valid_items: int = 1000  # size of the fixed validation set (first items of the test split)
    num_workers: int = 0


@dataclass
class LossConfig:
    """Loss weights. Images use `mse`; audio uses `l1` + `stft`, plus discriminators if `adversarial` is set;
    `teacher` replaces them all with encoder distillation; `decoder_only` trains the decoder alone."""

    mse: float = 1.0
    l1: float = 1.0
    stft: float = 1.0
    fft_sizes: list[int] = field(default_factory=lambda: [128, 256, 512, 1024])
    adversarial: AdversarialConfig | None = None  # audio only: GAN terms (tokenizer/discriminators.py)
    # Encoder distillation (tokenizer/distill.py): a tokenizer file, run folder or shipped name. The model then
    # takes this tokenizer's decoder and codebook as they are and trains only its (lighter) encoder to
    # reproduce the teacher's latents; the weights above are unused, validation is as usual.
    teacher: str | None = None
    # Decoder-only training (needs --init-from or --resume): the encoder and codebooks stay frozen (no gradient,
    # no EMA update, no restarts), so every input keeps its codes; the decoder alone learns, with the weights
    # above. A better decoder for codes already written: token files and priors trained on them stay valid.
    decoder_only: bool = False


@dataclass
class Recipe:
    """A tokenizer recipe: model + data + loss + training loop settings."""

    name: str = "tokenizer"
    task: str = "tokenizer"
    model: TokenizerConfig = field(default_factory=TokenizerConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def without_stages(data: dict, where: str | Path) -> dict:
    """A parsed recipe (overrides applied) without its `stages` list (vqtok/stages.py reads those), its `task`
    checked: for a file, what run.load_recipe_dict gives."""
    data = {key: value for key, value in data.items() if key != "stages"}
    task = data.get("task", "tokenizer")
    if task not in TASKS:
        raise VqtokError(f"{where}: unknown task '{task}'; choose one of {', '.join(TASKS)}")
    return data


def parse_recipe(data: dict, where: str | Path) -> Recipe:
    """A tokenizer recipe from its parsed YAML (overrides applied), strictly; errors name `where` and the key."""
    data = without_stages(data, where)
    try:
        return from_dict(Recipe, data)
    except VqtokError as err:
        raise VqtokError(f"{where}: {err}") from None


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Strictly load a tokenizer recipe; errors name the file and the offending key."""
    return parse_recipe(apply_overrides(load_yaml(path), list(overrides or [])), path)