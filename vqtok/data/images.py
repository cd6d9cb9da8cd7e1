"""Image files: loading to a fixed size with Pillow, and ImageFolder with optional class subfolders."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import Dataset

from vqtok.data.audio import empty_split, hash_split, list_files, relative_key
from vqtok.errors import VqtokError

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
SPLITS = ("train", "test", "all")
_MODES = {1: "L", 3: "RGB"}
# Pillow's convert("L") clips 16-bit values above 255 instead of scaling them; these modes are scaled by hand.
_WIDE_GRAY = {"I;16": 65535.0, "I;16B": 65535.0, "I;16L": 65535.0, "I": 65535.0}


def list_image_files(root: str | os.PathLike) -> list[Path]:
    """Image files (``IMAGE_EXTENSIONS``, any case) under ``root``, recursive and sorted."""
    return list_files(root, IMAGE_EXTENSIONS)


def _open(path: Path) -> Image.Image:
    """Open and fully decode ``path`` (Pillow decodes lazily, so truncation would surface later)."""
    if not path.is_file():
        raise VqtokError(f"{path}: image file not found; check the path")
    try:
        with Image.open(path) as img:
            img.load()
            # Phone photos store rotation in EXIF; apply it so width and height mean what the viewer shows.
            return ImageOps.exif_transpose(img)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        # UnidentifiedImageError is an OSError; SyntaxError is how some Pillow plugins report bad headers.
        reason = " ".join(str(err).split())
        raise VqtokError(f"{path}: not a readable image ({reason}); re-save it as PNG or JPEG or remove it") from None


# Pillow modes that hold one grey channel (alpha, when present, is dropped on loading); every other mode is colour.
_GREY_MODES = {"1", "L", "LA", "La", "I", "F"} | set(_WIDE_GRAY)


def image_channels(path: str | os.PathLike) -> int:
    """1 for a grey image file, 3 for a colour one (palette images count as colour), read from its header only."""
    path = Path(path)
    try:
        with Image.open(path) as img:
            return 1 if img.mode in _GREY_MODES else 3
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        _open(path)  # raises the one-line error that names the problem
        raise


def load_image(path: str | os.PathLike, size: tuple[int, int] | None = None, channels: int = 3) -> np.ndarray:
    """Read an image as float32 (C, H, W) in [0, 1], C = ``channels`` (1 gray, 3 RGB).

    With ``size=(H, W)`` the image is scaled so that it covers H x W (the limiting side fits exactly)
    and then centre-cropped: no distortion, and no padding the model would have to learn.
    Alpha is dropped.
    """
    if channels not in _MODES:
        raise VqtokError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels}")
    img = _open(Path(path))
    if img.mode in _WIDE_GRAY:
        # 16-bit gray: scale to [0, 1] in float mode "F" (resizable), then copy to 3 channels if asked.
        img = Image.fromarray(np.asarray(img, dtype=np.float32) / _WIDE_GRAY[img.mode])
        scale = 1.0
    else:
        img = img.convert(_MODES[channels])
        scale = 255.0
    if size is not None:
        img = _cover_and_crop(img, size)
    x = np.asarray(img, dtype=np.float32) / scale  # (H, W) or (H, W, 3)
    x = x[None] if x.ndim == 2 else x.transpose(2, 0, 1)  # (C, H, W), C = 1 or 3
    if x.shape[0] != channels:
        x = np.repeat(x, channels, axis=0)  # (3, H, W) from a 16-bit gray (1, H, W)
    # clip: bicubic overshoots a little beyond [0, 1] on float images.
    return np.ascontiguousarray(np.clip(x, 0.0, 1.0))


def shift_image(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """(B, C, H, W) moved dy rows down and dx columns right, zeros coming in (nothing wraps around)."""
    height, width = x.shape[-2:]
    # padding (left, right, top, bottom)
    padded = torch.nn.functional.pad(x, (max(dx, 0), max(-dx, 0), max(dy, 0), max(-dy, 0)))
    top, left = max(-dy, 0), max(-dx, 0)
    return padded[..., top : top + height, left : left + width]


def _cover_and_crop(img: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Resize ``img`` to cover (H, W) keeping its aspect ratio, then cut out the centre (H, W)."""
    height, width = size
    if height <= 0 or width <= 0:
        raise VqtokError(f"image size must be two positive numbers (H, W), got {size}")
    w, h = img.size
    scale = max(height / h, width / w)
    # max(): rounding must never leave the image a pixel short of the crop.
    new_w, new_h = max(width, round(w * scale)), max(height, round(h * scale))
    if (new_w, new_h) != (w, h):
        img = img.resize((new_w, new_h), Image.Resampling.BICUBIC)
    left, top = (new_w - width) // 2, (new_h - height) // 2
    return img.crop((left, top, left + width, top + height))


class ImageFolder(Dataset):
    """Images from a folder as ``{"x": float32 (C, H, W) in [0, 1], "label": int64 scalar}``.

    With ``labels_from_subfolders`` the first folder level names the class (``root/cat/1.png``);
    ``class_names`` is sorted and built from every file, not only this split's, so train and test
    agree on label numbers. Otherwise labels are -1. About 5% of files form the test split, chosen
    by a stable hash of the relative path (the same rule as audio folders).
    ``size=None`` keeps each image's own size (then batch size 1 unless all sizes match).
    Every file is decoded once at construction: bad ones are warned about once and skipped.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        size: tuple[int, int] | None = None,
        channels: int = 1,
        split: str = "train",
        labels_from_subfolders: bool = False,
    ) -> None:
        if split not in SPLITS:
            raise VqtokError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
        if channels not in _MODES:
            raise VqtokError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels}")
        self.root = Path(root)
        self.size = None if size is None else (int(size[0]), int(size[1]))
        self.channels = channels
        self.split = split
        found = list_image_files(self.root)
        keys = [relative_key(path, self.root) for path in found]

        def class_of(key: str) -> str | None:
            parts = key.split("/")
            return parts[0] if len(parts) > 1 else None

        if labels_from_subfolders:
            self.class_names: list[str] = sorted({c for c in map(class_of, keys) if c is not None})
        else:
            self.class_names = []
        class_index = {name: i for i, name in enumerate(self.class_names)}

        self.files: list[Path] = []
        self.labels: list[int] = []
        in_split = 0
        for path, key in zip(found, keys):
            if split != "all" and hash_split(key) != split:
                continue
            in_split += 1
            label = -1
            if labels_from_subfolders:
                name = class_of(key)
                if name is None:
                    logger.warning("skipping %s: it is not in a class subfolder of %s", path, self.root)
                    continue
                label = class_index[name]
            try:
                _open(path)
            except VqtokError as err:
                logger.warning("skipping %s", err)
                continue
            self.files.append(path)
            self.labels.append(label)
        if not self.files:
            raise empty_split(self.root, split, in_split, len(found), "images", IMAGE_EXTENSIONS)

    @property
    def num_classes(self) -> int | None:
        """Number of classes, or None without ``labels_from_subfolders``."""
        return len(self.class_names) or None

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        x = load_image(self.files[index], self.size, self.channels)  # (C, H, W)
        return {"x": torch.from_numpy(x), "label": torch.tensor(self.labels[index], dtype=torch.int64)}
