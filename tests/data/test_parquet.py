"""Codes as Parquet: exact round trips for one level, two levels and several codebooks; metadata; file rolling;
what `datasets` makes of the files."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from vqtok.data import parquet
from vqtok.errors import VqtokError

AUDIO_TOK = {"fingerprint": "a" * 16, "codes_fingerprint": "b" * 16, "arch": "vqvae", "dims": 1,
             "sample_rate": 16000, "codebook_size": [1024], "downsample": [50], "hop": 50, "path": None, "name": None}
IMAGE_TOK = {**AUDIO_TOK, "fingerprint": "c" * 16, "codes_fingerprint": "d" * 16, "arch": "vqvae2", "dims": 2,
             "sample_rate": None, "codebook_size": [512, 40000], "downsample": [8, 4], "hop": 8}


def audio_rows(n, rng, codebooks=None):
    rows = []
    for i in range(n):
        t = int(rng.integers(1, 40))
        shape = (t,) if codebooks is None else (codebooks, t)
        source = {"kind": "audio", "path": f"in/{i}.wav", "length": t * 50 - 3, "duration": (t * 50 - 3) / 16000}
        rows.append(parquet.item_row(f"spk/{i}.wav", [rng.integers(0, 1024, shape)], source,
                                     i % 3 if i % 4 else None))
    return rows


def read_back(folder, tok):
    data = parquet.CodesParquet(folder)
    assert data.tokenizer == tok
    return data, list(data)


@pytest.mark.parametrize("codebooks", [None, 4])
def test_audio_round_trip_exact(tmp_path, codebooks):
    rng = np.random.default_rng(0)
    rows = audio_rows(30, rng, codebooks)
    writer = parquet.ParquetWriter(tmp_path, AUDIO_TOK)
    for r in rows:
        writer.add(r)
    assert writer.close() == [tmp_path / "codes-00000.parquet"]
    data, items = read_back(tmp_path, AUDIO_TOK)
    assert len(data) == 30 and data.ids() == [r["id"] for r in rows]
    for r, item in zip(rows, items):
        assert item.meta["id"] == r["id"] and len(item.levels) == 1
        np.testing.assert_array_equal(item.levels[0], r["codes"][0])  # values and shape
        assert item.levels[0].dtype == np.int64
        assert item.label == r["label"] and item.source == json.loads(r["source"])
        row = item.meta["row"]
        assert row["frames"] == [r["codes"][0].shape[-1]] and row["duration"] == r["duration"]
    meta = parquet.read_metadata(tmp_path / "codes-00000.parquet")
    assert meta["frame_rate"] == [320.0] and meta["vocabulary"] == {"codebook_size": [1024]}
    assert meta["levels"] == ["codes"]
    # int16 holds 1024 codes: the file stores them so
    assert pq.read_schema(tmp_path / "codes-00000.parquet").field("codes").type.value_type.value_type == "int16"


def test_two_levels_and_int32_codes(tmp_path):
    rng = np.random.default_rng(1)
    writer = parquet.ParquetWriter(tmp_path, IMAGE_TOK, prefix="img")
    levels = [rng.integers(0, 512, (3, 4)), rng.integers(0, 40000, (6, 8))]
    writer.add(parquet.item_row("a/1.png", levels, {"kind": "image", "path": "a/1.png", "size": [24, 32]}, 7))
    writer.close()
    item = parquet.CodesParquet(tmp_path / "img-00000.parquet").get("a/1.png")
    for want, got in zip(levels, item.levels):
        np.testing.assert_array_equal(got, want)
    row = item.meta["row"]
    assert row["size"] == [24, 32] and row["frames"] == [12, 48] and row["duration"] is None
    file = parquet.CodesParquet(tmp_path).get("a/1.png")
    assert file.size == (24, 32) and file.label == 7 and [lv["shape"] for lv in file.meta["levels"]] == [[3, 4], [6, 8]]
    assert parquet.read_metadata(tmp_path / "img-00000.parquet")["frame_rate"] is None


def test_files_roll_at_the_target_size(tmp_path):
    rng = np.random.default_rng(2)
    rows = audio_rows(40, rng)
    writer = parquet.ParquetWriter(tmp_path, AUDIO_TOK, target_bytes=2000)
    for r in rows:
        writer.add(r)
    files = writer.close()
    assert len(files) > 3 and [f.name for f in files] == [f"codes-{i:05d}.parquet" for i in range(len(files))]
    _, items = read_back(tmp_path, AUDIO_TOK)
    assert [i.meta["id"] for i in items] == [r["id"] for r in rows]  # order kept across files


def test_bad_files_and_ids(tmp_path):
    writer = parquet.ParquetWriter(tmp_path, AUDIO_TOK)
    writer.add(audio_rows(1, np.random.default_rng(3))[0])
    writer.close()
    with pytest.raises(VqtokError, match="no item with id 'nope'"):
        parquet.CodesParquet(tmp_path).get("nope")
    (tmp_path / "junk.parquet").write_bytes(b"not parquet")
    with pytest.raises(VqtokError, match="junk.parquet: not a readable Parquet file"):
        parquet.CodesParquet(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    w = parquet.ParquetWriter(other, {**AUDIO_TOK, "fingerprint": "e" * 16, "codes_fingerprint": "f" * 16})
    w.add(audio_rows(1, np.random.default_rng(4))[0])
    w.close()
    with pytest.raises(VqtokError, match="one dataset, one tokenizer"):
        parquet.CodesParquet([tmp_path / "codes-00000.parquet", other])


def test_out_of_range_ids_are_refused(tmp_path):
    row = audio_rows(1, np.random.default_rng(5))[0]
    row["codes"] = [np.array([3, 1024, 5])]
    w = parquet.ParquetWriter(tmp_path, AUDIO_TOK)
    w.add(row)
    w.close()
    with pytest.raises(VqtokError, match=r"level 0 holds 3 codes, its shape \[27\] says 27"):
        list(parquet.CodesParquet(tmp_path))
    row["shapes"] = [[3]]
    w = parquet.ParquetWriter(tmp_path, AUDIO_TOK)
    w.add(row)
    w.close()
    with pytest.raises(VqtokError, match="ids 3..1024, outside the 1024-code codebook"):
        list(parquet.CodesParquet(tmp_path))


def test_datasets_loads_the_files(tmp_path):
    datasets = pytest.importorskip("datasets")
    rng = np.random.default_rng(6)
    rows = audio_rows(12, rng, codebooks=2)
    writer = parquet.ParquetWriter(tmp_path / "out", AUDIO_TOK, target_bytes=500)
    for r in rows:
        writer.add(r)
    files = writer.close()
    ds = datasets.load_dataset("parquet", data_files=[str(f) for f in files], split="train",
                               cache_dir=str(tmp_path / "cache"))
    assert len(ds) == 12 and ds[3]["id"] == rows[3]["id"]
    for r, got in zip(rows, ds):
        assert np.array(got["codes"][0]).reshape(got["shapes"][0]).tolist() == r["codes"][0].tolist()
