"""Tests for image loading (cover-resize, centre crop, modes) and ImageFolder, on images written to tmp_path."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vqtok.data.rules import hash_split
from vqtok.data.images import ImageFolder, list_image_files, load_image
from vqtok.errors import VqtokError


def save(path: Path, array: np.ndarray, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **kwargs)
    return path


def rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "\n" not in msg
    return msg


# --- load_image ---


def test_png_native_size_exact(tmp_path):
    pixels = rgb(20, 40)  # H=20, W=40: not square
    x = load_image(save(tmp_path / "a.png", pixels), None, 3)
    assert x.dtype == np.float32 and x.shape == (3, 20, 40)
    np.testing.assert_array_equal(x, pixels.transpose(2, 0, 1) / np.float32(255))


def test_rgb_to_gray_and_gray_to_rgb(tmp_path):
    pixels = rgb(12, 7)
    path = save(tmp_path / "a.png", pixels)
    gray = load_image(path, None, 1)
    assert gray.shape == (1, 12, 7)
    np.testing.assert_array_equal(gray[0], np.asarray(Image.fromarray(pixels).convert("L")) / np.float32(255))
    g = save(tmp_path / "g.png", pixels[..., 0])
    x = load_image(g, None, 3)
    assert x.shape == (3, 12, 7) and np.array_equal(x[0], x[2])


def test_cover_resize_then_centre_crop(tmp_path):
    # 40 wide x 20 high: dark 10-column bands at both sides, bright in the middle.
    pixels = np.zeros((20, 40), np.uint8)
    pixels[:, 10:30] = 255
    x = load_image(save(tmp_path / "bands.png", pixels), (16, 16), 1)
    # Scaled by 0.8 to 32x16 (height fits), then the centre 16 columns kept: the dark bands are cut away.
    assert x.shape == (1, 16, 16)
    assert x[:, :, 2:14].min() > 0.97 and x.mean() > 0.9


def test_cover_resize_tall_image(tmp_path):
    pixels = np.zeros((40, 20), np.uint8)  # 20 wide x 40 high
    pixels[:12] = 255
    x = load_image(save(tmp_path / "tall.png", pixels), (8, 16), 1)
    # Width fits (20 -> 16), height 40 -> 32, rows 12..20 kept: the bright top is cut away.
    assert x.shape == (1, 8, 16) and x.max() < 0.03


def test_jpeg_and_upscaling(tmp_path):
    path = save(tmp_path / "photo.JPEG", np.full((10, 6, 3), 200, np.uint8), quality=95)
    x = load_image(path, (32, 24), 3)
    assert x.shape == (3, 32, 24)
    np.testing.assert_allclose(x, 200 / 255, atol=0.02)


def test_jpeg_exif_rotation_applied(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees on display
    path = save(tmp_path / "rot.jpg", rgb(10, 30), exif=exif)
    assert load_image(path, None, 3).shape == (3, 30, 10)


def test_sixteen_bit_gray_is_scaled_not_clipped(tmp_path):
    pixels = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000).astype(np.uint16)
    path = save(tmp_path / "deep.png", pixels)
    x = load_image(path, None, 1)
    np.testing.assert_allclose(x[0], pixels / 65535, atol=1e-6)
    assert load_image(path, (4, 4), 3).shape == (3, 4, 4)


def test_rgba_drops_alpha(tmp_path):
    pixels = np.dstack([rgb(5, 9), np.zeros((5, 9), np.uint8)])
    x = load_image(save(tmp_path / "alpha.png", pixels), None, 3)
    np.testing.assert_array_equal(x, pixels[..., :3].transpose(2, 0, 1) / np.float32(255))


def test_unreadable_images(tmp_path):
    (tmp_path / "text.png").write_text("not an image")
    good = save(tmp_path / "full.png", rgb(64, 64)).read_bytes()
    (tmp_path / "cut.png").write_bytes(good[: len(good) // 2])
    for name in ["text.png", "cut.png"]:
        with pytest.raises(VqtokError, match="not a readable image") as err:
            load_image(tmp_path / name, (8, 8), 3)
        assert name in one_line(err)
    with pytest.raises(VqtokError, match="not found"):
        load_image(tmp_path / "missing.png", None, 1)
    with pytest.raises(VqtokError, match="channels must be 1"):
        load_image(tmp_path / "full.png", None, 2)


# --- ImageFolder ---


@pytest.fixture
def folder(tmp_path) -> Path:
    """60 small images in two class subfolders, one gray JPEG among them."""
    root = tmp_path / "images"
    for i in range(60):
        cls = "cats" if i % 2 else "dogs"
        save(root / cls / f"{i:02d}.png", rgb(12, 10 + i % 5, seed=i))
    save(root / "dogs" / "gray.jpg", np.full((9, 14), 90, np.uint8))
    return root


def test_folder_split_partition(folder):
    every = ImageFolder(folder, (8, 8), 3, split="all")
    train = ImageFolder(folder, (8, 8), 3, split="train")
    test = ImageFolder(folder, (8, 8), 3, split="test")
    assert len(every) == 61 and len(every) == len(train) + len(test)
    assert set(train.files).isdisjoint(test.files) and set(train.files) | set(test.files) == set(every.files)
    assert all(hash_split(p.relative_to(folder).as_posix()) == "test" for p in test.files)
    assert 1 <= len(test) <= 10


def test_folder_items_and_classes(folder):
    ds = ImageFolder(folder, (8, 6), 1, split="all", labels_from_subfolders=True)
    assert ds.class_names == ["cats", "dogs"] and ds.num_classes == 2
    assert all(ds.labels[i] == ds.class_names.index(p.parent.name) for i, p in enumerate(ds.files))
    item = ds[0]
    assert item["x"].shape == (1, 8, 6) and item["x"].dtype == torch.float32
    assert item["label"].dtype == torch.int64 and item["label"].ndim == 0
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=5)))
    assert batch["x"].shape == (5, 1, 8, 6) and batch["label"].shape == (5,)


def test_folder_class_numbers_agree_across_splits(folder):
    # A split may miss a class entirely; label numbers must not shift because of it.
    (folder / "aardvarks").mkdir()
    save(folder / "aardvarks" / "only.png", rgb(8, 8))
    split_of_only = hash_split("aardvarks/only.png")
    other = "train" if split_of_only == "test" else "test"
    ds = ImageFolder(folder, (8, 8), 3, split=other, labels_from_subfolders=True)
    assert ds.class_names == ["aardvarks", "cats", "dogs"]
    assert set(ds.labels) <= {1, 2}


def test_folder_without_labels(folder):
    ds = ImageFolder(folder, (8, 8), 3, split="all")
    assert ds.num_classes is None and ds.class_names == [] and set(ds.labels) == {-1}
    assert int(ds[0]["label"]) == -1


def test_folder_skips_bad_files_with_one_warning_each(folder, caplog):
    (folder / "cats" / "broken.png").write_text("garbage")
    save(folder / "loose.png", rgb(8, 8))  # not in a class subfolder
    with caplog.at_level(logging.WARNING, logger="vqtok.data.images"):
        ds = ImageFolder(folder, (8, 8), 3, split="all", labels_from_subfolders=True)
    assert len(ds) == 61
    assert sum("broken.png" in r.getMessage() for r in caplog.records) == 1
    assert sum("loose.png" in r.getMessage() for r in caplog.records) == 1
    assert len(caplog.records) == 2


def test_folder_empty_or_all_bad(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    with pytest.raises(VqtokError, match="no .png/.jpg/.jpeg files") as err:
        ImageFolder(tmp_path / "empty", (8, 8))
    assert str(tmp_path / "empty") in one_line(err)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.png").write_text("nope")
    with pytest.raises(VqtokError, match="usable") as err:
        ImageFolder(tmp_path / "bad", (8, 8), split="all")
    assert str(tmp_path / "bad") in one_line(err)
    with pytest.raises(VqtokError, match="train, test, all"):
        ImageFolder(tmp_path / "bad", (8, 8), split="val")


def test_list_image_files(tmp_path):
    for name in ["b.PNG", "a/c.jpeg", "a/d.JPG", "e.gif", "._f.png"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    assert [p.relative_to(tmp_path).as_posix() for p in list_image_files(tmp_path)] == ["a/c.jpeg", "a/d.JPG", "b.PNG"]
