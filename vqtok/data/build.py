"""One dataset builder: the data section both recipe schemas embed (DataSource), a kind -> builder table, and a
tokenizer run's train and validation sets."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch.utils.data import Dataset, Subset

from vqtok.data.audio import AudioFolder, ConcatClips, RandomGain
from vqtok.data.images import ImageFolder
from vqtok.data.mnist import MNIST
from vqtok.data.tokens import TokenDataset
from vqtok.errors import VqtokError


@dataclass
class DataSource:
    """Where a recipe's data lives and how its items are read; tokenizer and prior recipes extend it."""

    kind: str = "mnist"  # mnist | audio | images | codes (a manifest.jsonl from `vqtok encode`; priors only)
    root: str = "data"  # relative paths are resolved against the current directory
    download: bool = False  # mnist: fetch the files (MD5-checked) when missing
    pad_to: int | None = None  # mnist: zero-pad 28x28 to this size
    # audio and codes: label/split rule from file names ("fsdd", "fsdd_speaker", "folders", "hash")
    rule: str | None = "hash"
    # audio: every file brought to this speech level when read (gated RMS dBFS, speech_level.py), as
    # `vqtok encode` brings a clip to a tokenizer's model.level_db; None reads files as they are
    level_db: float | None = None
    image_size: list[int] | None = None  # images: [H, W] after resize + centre crop
    channels: int = 1  # images: 1 (grey) or 3 (RGB)


def _mnist(source: DataSource, split: str, sample_rate: int | None, crop_seconds: float | None) -> Dataset:
    return MNIST(source.root, split, pad_to=source.pad_to, download=source.download)


def _audio(source: DataSource, split: str, sample_rate: int | None, crop_seconds: float | None) -> Dataset:
    if sample_rate is None:
        raise VqtokError("data.kind 'audio' needs an audio tokenizer (model.sample_rate)")
    # Training crops are random; whole clips (crop_seconds None) are read as they are.
    return AudioFolder(source.root, sample_rate, crop_seconds, split, source.rule, random_crop=crop_seconds is not None,
                       level_db=source.level_db)


def _images(source: DataSource, split: str, sample_rate: int | None, crop_seconds: float | None) -> Dataset:
    size = tuple(source.image_size) if source.image_size else None
    return ImageFolder(source.root, size=size, channels=source.channels, split=split)


def _codes(source: DataSource, split: str, sample_rate: int | None, crop_seconds: float | None) -> Dataset:
    return TokenDataset(source.root, split=split, rule=source.rule)


Builder = Callable[[DataSource, str, "int | None", "float | None"], Dataset]
BUILDERS: dict[str, Builder] = {"mnist": _mnist, "audio": _audio, "images": _images, "codes": _codes}
# Spatial axes of each kind's items (1: audio, 2: images); codes carry their tokenizer's.
KIND_DIMS = {"mnist": 2, "audio": 1, "images": 2}


def build_dataset(source: DataSource, split: str, sample_rate: int | None = None,
                  crop_seconds: float | None = None) -> Dataset:
    """The `split` ("train" or "test") of a recipe's data section. Audio is read at `sample_rate`, in random
    crops of `crop_seconds` (training) or whole clips (None)."""
    if source.kind not in BUILDERS:
        raise VqtokError(f"unknown data.kind '{source.kind}'; choose one of {', '.join(BUILDERS)}")
    if source.level_db is not None and source.kind != "audio":
        raise VqtokError(f"data.level_db is for audio; data.kind is '{source.kind}'")
    return BUILDERS[source.kind](source, split, sample_rate, crop_seconds)


def build_tokenizer_data(data, sample_rate: int | None) -> tuple[Dataset, Dataset]:
    """(train, validation) datasets of a tokenizer recipe's data section (tokenizer/recipe.py's DataConfig, a
    DataSource with crops, augmentation and a validation size); validation is fixed and deterministic."""
    if data.kind == "codes":
        raise VqtokError("data.kind 'codes' (encoded files) trains priors; a tokenizer needs mnist, audio or images")
    train = build_dataset(data, "train", sample_rate, crop_seconds=data.segment_seconds)
    if data.concat and data.kind == "audio":
        train = ConcatClips(train, data.max_gap_seconds)
    if data.gain_db > 0 and data.kind == "audio":
        train = RandomGain(train, data.gain_db)
    # Whole validation clips, padded per batch by `collate` (the mask keeps padding out).
    valid = build_dataset(data, "test", sample_rate)
    if len(valid) > data.valid_items:
        valid = Subset(valid, range(data.valid_items))
    return train, valid


def check_dims(source: DataSource, dims: int) -> None:
    """A data kind that a tokenizer of `dims` spatial axes can code (the error says which it is)."""
    want = KIND_DIMS.get(source.kind)
    if want is not None and want != dims:
        held, codes = ("audio", "images") if want == 1 else ("images", "audio")
        raise VqtokError(f"data.kind '{source.kind}' holds {held}, but the tokenizer codes {codes} (dims={dims})")
