"""Tests for the MNIST IDX reader, the verified downloader and the MNIST dataset."""

from __future__ import annotations

import gzip
import hashlib
import io
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

from testdata import SHARED_DATA, needs_corpus
from vqtok.data import mnist
from vqtok.data.mnist import MNIST, download_mnist, load_mnist, read_idx
from vqtok.errors import VqtokError

MNIST_DIR = SHARED_DATA / "mnist"


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file for a uint8 array of rank 1 (labels) or 3 (images)."""
    magic = {1: 0x801, 3: 0x803}[array.ndim]
    header = magic.to_bytes(4, "big") + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_split(root: Path, split: str, images: np.ndarray, labels: np.ndarray) -> None:
    image_name, label_name = mnist.FILES[split]
    (root / image_name).write_bytes(gzip.compress(idx_bytes(images)))
    (root / label_name).write_bytes(gzip.compress(idx_bytes(labels)))


def one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "\n" not in msg
    return msg


# --- real digits: ../shared/data/mnist, or the repo's few (testdata.py) ---


@needs_corpus  # the 7,000 / 1,000 split
def test_real_files_shapes_and_labels():
    images, labels = load_mnist(MNIST_DIR, "train")
    assert images.shape == (7000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (7000,) and labels.dtype == np.int64
    assert set(np.unique(labels)) == set(range(10))
    # Digits are white strokes on black: corners are empty, strokes reach full intensity.
    assert images[:, 0, 0].max() == 0 and images.max() == 255
    test_images, test_labels = load_mnist(MNIST_DIR, "test")
    assert test_images.shape == (1000, 28, 28) and test_labels.shape == (1000,)


def test_read_idx_plain_equals_gzip(tmp_path):
    gz = MNIST_DIR / "t10k-labels-idx1-ubyte.gz"
    plain = tmp_path / "t10k-labels-idx1-ubyte"
    plain.write_bytes(gzip.decompress(gz.read_bytes()))
    np.testing.assert_array_equal(read_idx(plain), read_idx(gz))


@needs_corpus  # the test split's 1,000 images
def test_dataset_items_and_padding():
    ds = MNIST(MNIST_DIR, "test")
    padded = MNIST(MNIST_DIR, "test", pad_to=32)
    assert len(ds) == len(padded) == 1000 and ds.num_classes == 10
    item, item32 = ds[3], padded[3]
    assert item["x"].shape == (1, 28, 28) and item["x"].dtype == torch.float32
    assert item["label"].dtype == torch.int64 and item["label"].ndim == 0
    assert int(item["label"]) == ds.labels[3]
    assert 0.0 <= item["x"].min() and item["x"].max() <= 1.0
    images, _ = load_mnist(MNIST_DIR, "test")
    torch.testing.assert_close(item["x"][0], torch.from_numpy(images[3]).float() / 255)
    # Symmetric: 2 zero rows/columns on every side, the digit unchanged in the middle.
    assert item32["x"].shape == (1, 32, 32) and padded.image_shape == (1, 32, 32)
    torch.testing.assert_close(item32["x"][:, 2:30, 2:30], item["x"])
    assert item32["x"].sum() == pytest.approx(item["x"].sum().item())


def test_dataloader_batches():
    loader = torch.utils.data.DataLoader(MNIST(MNIST_DIR, "test", pad_to=32), batch_size=8)
    batch = next(iter(loader))
    assert batch["x"].shape == (8, 1, 32, 32) and batch["label"].shape == (8,)


def test_pad_to_smaller_than_image(tmp_path):
    write_split(tmp_path, "test", np.zeros((2, 28, 28)), np.zeros(2))
    with pytest.raises(VqtokError, match="pad_to=20"):
        MNIST(tmp_path, "test", pad_to=20)
    # Odd padding: the extra row/column goes bottom/right.
    assert MNIST(tmp_path, "test", pad_to=31)[0]["x"].shape == (1, 31, 31)


# --- corrupt and missing files ---


def test_bad_magic(tmp_path):
    path = tmp_path / "x-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(b"\x00\x00\x08\x04" + bytes(20)))
    with pytest.raises(VqtokError) as err:
        read_idx(path)
    assert str(path) in one_line(err) and "0x00000804" in str(err.value)


def test_truncated_payload(tmp_path):
    path = tmp_path / "x-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.zeros((3, 28, 28)))[:-100]))
    with pytest.raises(VqtokError, match="truncated") as err:
        read_idx(path)
    assert str(path) in one_line(err) and "(3, 28, 28)" in str(err.value)


def test_trailing_bytes(tmp_path):
    path = tmp_path / "x-idx1-ubyte"
    path.write_bytes(idx_bytes(np.zeros(5)) + b"\x01")
    with pytest.raises(VqtokError, match="trailing"):
        read_idx(path)


def test_truncated_header(tmp_path):
    path = tmp_path / "x-idx3-ubyte"
    path.write_bytes(idx_bytes(np.zeros((3, 2, 2)))[:10])
    with pytest.raises(VqtokError, match="header"):
        read_idx(path)


def test_not_gzip_garbage(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(b"<html>404 Not Found</html>")
    with pytest.raises(VqtokError, match="not gzip") as err:
        read_idx(path)
    assert str(path) in one_line(err)


def test_truncated_gzip_stream(tmp_path):
    path = tmp_path / "x-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.arange(3 * 28 * 28).reshape(3, 28, 28) % 256))[:200])
    with pytest.raises(VqtokError, match="gzip") as err:
        read_idx(path)
    assert str(path) in one_line(err)


def test_count_mismatch(tmp_path):
    write_split(tmp_path, "train", np.zeros((4, 28, 28)), np.zeros(3))
    with pytest.raises(VqtokError, match="4 images but .* 3 labels") as err:
        load_mnist(tmp_path, "train")
    one_line(err)


def test_swapped_files(tmp_path):
    image_name, label_name = mnist.FILES["train"]
    (tmp_path / image_name).write_bytes(gzip.compress(idx_bytes(np.zeros(3))))
    (tmp_path / label_name).write_bytes(gzip.compress(idx_bytes(np.zeros((3, 28, 28)))))
    with pytest.raises(VqtokError, match="swapped"):
        load_mnist(tmp_path, "train")


def test_missing_files_without_download(tmp_path):
    with pytest.raises(VqtokError) as err:
        load_mnist(tmp_path, "test")
    msg = one_line(err)
    assert "t10k-images-idx3-ubyte.gz" in msg and str(tmp_path) in msg and "download=True" in msg


def test_unknown_split(tmp_path):
    with pytest.raises(VqtokError, match="train, test"):
        load_mnist(tmp_path, "valid")


def test_small_synthetic_split(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (5, 28, 28))
    write_split(tmp_path, "train", images, np.arange(5))
    loaded, labels = load_mnist(tmp_path, "train")
    np.testing.assert_array_equal(loaded, images)
    np.testing.assert_array_equal(labels, np.arange(5))


# --- downloading, with urllib patched: tests never touch the network ---


def no_leftovers(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if p.name.endswith(".part")]


def test_download_offline(tmp_path, monkeypatch):
    urls = []

    def offline(url, timeout=None):
        urls.append(url)
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    root = tmp_path / "mnist"
    with pytest.raises(VqtokError, match="offline") as err:
        load_mnist(root, "train", download=True)
    msg = one_line(err)
    assert all(name in msg for name in mnist.MD5) and str(root) in msg
    # Every mirror was tried for the first file before giving up.
    assert len(urls) == len(mnist.MIRRORS)
    assert no_leftovers(root) and list(root.iterdir()) == []


def test_download_md5_mismatch(tmp_path, monkeypatch):
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout=None: io.BytesIO(b"<html>captive portal</html>"))
    with pytest.raises(VqtokError, match="checksum") as err:
        download_mnist(tmp_path)
    msg = one_line(err)
    assert "train-images-idx3-ubyte.gz" in msg and mnist.MD5["train-images-idx3-ubyte.gz"] in msg
    # Nothing half-right is left under the final name, and no temporary file either.
    assert list(tmp_path.iterdir()) == []


def test_download_success_is_atomic_and_keeps_existing(tmp_path, monkeypatch):
    payloads = {
        "train-images-idx3-ubyte.gz": gzip.compress(idx_bytes(np.full((2, 28, 28), 7))),
        "train-labels-idx1-ubyte.gz": gzip.compress(idx_bytes(np.array([3, 4]))),
        "t10k-images-idx3-ubyte.gz": gzip.compress(idx_bytes(np.zeros((1, 28, 28)))),
        "t10k-labels-idx1-ubyte.gz": gzip.compress(idx_bytes(np.array([9]))),
    }
    monkeypatch.setattr(mnist, "MD5", {k: hashlib.md5(v).hexdigest() for k, v in payloads.items()})
    requested = []

    def fake_urlopen(url, timeout=None):
        requested.append(url)
        if url.startswith(mnist.MIRRORS[0]):
            raise urllib.error.URLError("first mirror down")
        return io.BytesIO(payloads[url.rsplit("/", 1)[1]])

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    # A file already present is the user's: never re-downloaded or checked against the official MD5.
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(payloads["t10k-labels-idx1-ubyte.gz"])
    images, labels = load_mnist(tmp_path, "train", download=True)
    assert images.shape == (2, 28, 28) and (images == 7).all() and labels.tolist() == [3, 4]
    assert not any("t10k-labels" in url for url in requested)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(payloads)
