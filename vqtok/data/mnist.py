"""MNIST from its original IDX files: a strict reader, a verified downloader and a torch Dataset."""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import tempfile
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from vqtok.errors import VqtokError

logger = logging.getLogger(__name__)

# IDX magic numbers (http://yann.lecun.com/exdb/mnist/): 0x0000, dtype 0x08 = uint8, then the rank.
IDX_IMAGES_MAGIC = 0x00000803
IDX_LABELS_MAGIC = 0x00000801
_RANK = {IDX_IMAGES_MAGIC: 3, IDX_LABELS_MAGIC: 1}

SPLITS = ("train", "test")
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
# MD5s of the official full files (60,000 + 10,000 digits).
MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
# The same mirrors torchvision tries, in order: the original site often refuses scripted downloads.
MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
_ALL_FILES = ", ".join(MD5)
_GZIP_MAGIC = b"\x1f\x8b"


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read a gzip-compressed or plain IDX file of uint8.

    Returns images as uint8 (N, rows, cols) for magic 0x00000803 and labels as uint8 (N,) for 0x00000801.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise VqtokError(f"{path}: file not found; check the path or pass download=True") from None
    except OSError as err:
        raise VqtokError(f"{path}: cannot read the file ({err.strerror})") from None
    # Sniff the content rather than trust the name: some mirrors serve already-decompressed files.
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as err:
            raise VqtokError(
                f"{path}: corrupt or truncated gzip data ({err}); delete it and download it again"
            ) from None
    elif path.suffix == ".gz":
        raise VqtokError(
            f"{path}: not gzip data although named .gz (starts with {raw[:4].hex() or 'nothing'}); "
            "delete it and download it again"
        )
    if len(raw) < 4:
        raise VqtokError(f"{path}: only {len(raw)} bytes, too short for an IDX header; delete it and download it again")
    magic = int.from_bytes(raw[:4], "big")
    if magic not in _RANK:
        raise VqtokError(
            f"{path}: bad IDX magic 0x{magic:08x} (expected 0x{IDX_IMAGES_MAGIC:08x} for images or "
            f"0x{IDX_LABELS_MAGIC:08x} for labels); the file is corrupt or not MNIST"
        )
    rank = _RANK[magic]
    header = 4 + 4 * rank
    if len(raw) < header:
        raise VqtokError(f"{path}: truncated IDX header ({len(raw)} of {header} bytes); download it again")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(rank))
    expected = int(np.prod(shape, dtype=np.int64))
    actual = len(raw) - header
    if actual != expected:
        what = "truncated" if actual < expected else "has trailing bytes"
        raise VqtokError(
            f"{path}: {what}: header declares shape {shape} = {expected} bytes but holds {actual}; "
            "delete it and download it again"
        )
    # np.frombuffer on bytes is read-only; copy so the caller may modify the array.
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape).copy()


def download_mnist(root: str | os.PathLike) -> None:
    """Download the four official MNIST files that are missing from ``root``, checking their MD5s.

    Files already present are left alone (a subset or a local copy is the user's choice).
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for name, md5 in MD5.items():
        if (root / name).exists():
            continue
        failures, checksum_failed = [], False
        for mirror in MIRRORS:
            url = mirror + name
            logger.info("downloading %s", url)
            try:
                got = _fetch(url, root / name, md5)
            except (urllib.error.URLError, OSError) as err:
                failures.append(f"{url}: {getattr(err, 'reason', err)}")
                continue
            if got == md5:
                break
            checksum_failed = True
            failures.append(f"{url} gave MD5 {got}, expected {md5}")
        else:
            if checksum_failed:
                raise VqtokError(
                    f"{root / name}: download failed its checksum ({'; '.join(failures)}); try again later"
                )
            raise VqtokError(
                f"cannot download {name} (no mirror reachable; this machine may be offline): "
                f"copy {_ALL_FILES} into {root} by hand"
            )


def _fetch(url: str, dest: Path, md5: str) -> str:
    """Stream ``url`` into ``dest`` through a temporary file, moved into place only if its MD5 is ``md5``.

    Returns the MD5 of the bytes received.
    """
    digest = hashlib.md5(usedforsecurity=False)  # a checksum, not security: allowed on FIPS systems
    # Same folder as the destination so os.replace is an atomic rename: a crash or a bad download
    # never leaves a half-written file under the final name.
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as resp:
            while chunk := resp.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() == md5:
            os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return digest.hexdigest()


def load_mnist(
    root: str | os.PathLike, split: str = "train", download: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Load one MNIST split from ``root``: images uint8 (N, 28, 28) and labels int64 (N,)."""
    root = Path(root)
    if split not in FILES:
        raise VqtokError(f"unknown MNIST split {split!r}; choose one of {', '.join(SPLITS)}")
    image_file, label_file = (root / name for name in FILES[split])
    missing = [p.name for p in (image_file, label_file) if not p.exists()]
    if missing and download:
        download_mnist(root)
    elif missing:
        raise VqtokError(
            f"MNIST {split} files missing in {root}: {', '.join(missing)}; copy them there, or fetch them: "
            "data.download=true in a recipe or on the vqtok train command line (download=True in Python)"
        )
    images = read_idx(image_file)
    labels = read_idx(label_file)
    if images.ndim != 3:
        raise VqtokError(f"{image_file}: holds labels {images.shape}, not images; the files are swapped or misnamed")
    if labels.ndim != 1:
        raise VqtokError(f"{label_file}: holds images {labels.shape}, not labels; the files are swapped or misnamed")
    if len(images) != len(labels):
        raise VqtokError(
            f"{image_file} has {len(images)} images but {label_file} has {len(labels)} labels; "
            "the pair comes from different downloads: replace both"
        )
    if labels.size and labels.max() > 9:
        raise VqtokError(f"{label_file}: label {labels.max()} is not a digit 0-9; the file is not MNIST")
    return images, labels.astype(np.int64)


class MNIST(Dataset):
    """MNIST digits as ``{"x": float32 (1, H, W) in [0, 1], "label": int64 scalar}``.

    ``pad_to=32`` zero-pads the 28x28 digits to 32x32 so that five stride-2 downsamplings divide evenly.
    """

    num_classes = 10

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        pad_to: int | None = None,
        download: bool = False,
    ) -> None:
        self.root = Path(root)
        self.split = split
        self._images, self._labels = load_mnist(root, split, download)  # (N, 28, 28) uint8, (N,) int64
        rows, cols = self._images.shape[1:]
        if pad_to is not None and pad_to < max(rows, cols):
            raise VqtokError(
                f"MNIST pad_to={pad_to} is smaller than the {rows}x{cols} images; use {max(rows, cols)} or more"
            )
        self.pad_to = pad_to
        if pad_to is None:
            self._pad = (0, 0, 0, 0)
        else:
            # F.pad order is (left, right, top, bottom); an odd remainder goes right/bottom.
            top, left = (pad_to - rows) // 2, (pad_to - cols) // 2
            self._pad = (left, pad_to - cols - left, top, pad_to - rows - top)

    @property
    def labels(self) -> np.ndarray:
        """Labels int64 (N,)."""
        return self._labels

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """Shape (1, H, W) of every item's ``x``, padding included."""
        rows, cols = self._images.shape[1:]
        left, right, top, bottom = self._pad
        return (1, rows + top + bottom, cols + left + right)

    def __len__(self) -> int:
        return len(self._images)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        x = torch.from_numpy(self._images[index]).to(torch.float32).div_(255.0).unsqueeze(0)  # (1, 28, 28)
        if self.pad_to is not None:
            x = F.pad(x, self._pad)  # (1, pad_to, pad_to)
        return {"x": x, "label": torch.tensor(self._labels[index], dtype=torch.int64)}
