"""TokenDataset: codes, lengths and labels from an encoded folder, vocabulary layout, padding."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cli"))
from clihelpers import make_tokenizer, write_wav  # noqa: E402

from vqtok import VqtokError  # noqa: E402
from vqtok.cli import main  # noqa: E402
from vqtok.data import TokenDataset, Vocab  # noqa: E402


def encode(args):
    from click.testing import CliRunner

    res = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert res.exit_code == 0, res.output


@pytest.fixture
def encoded(tmp_path):
    tok = make_tokenizer(tmp_path / "tok.safetensors")
    for name, n in [("3_a_1.wav", 500), ("5_b_2.wav", 1210), ("9_c_3.wav", 101)]:
        write_wav(tmp_path / "in" / name, n)
    encode(["encode", tmp_path / "in", "-m", tok, "-o", tmp_path / "out", "--labels", "fsdd", "--quiet"])
    return tmp_path / "out"


def test_vocab_layout():
    v = Vocab(512)
    assert (v.pad, v.bos, v.eos, v.size) == (512, 513, 514, 515)


def test_items_lengths_and_labels(encoded):
    ds = TokenDataset(encoded / "manifest.jsonl")
    assert len(ds) == 3 and ds.levels == 1 and ds.vocab == [Vocab(64)] and ds.num_classes == 10
    lengths = [ds[i]["length"] for i in range(3)]
    assert lengths == [25, 61, 6]
    assert [ds[i]["label"] for i in range(3)] == [3, 5, 9]
    assert np.array_equal(ds[1]["codes"].numpy(), np.load(encoded / "5_b_2.npy"))
    assert TokenDataset(encoded).codes[0][0].dtype == torch.int64  # the folder works too


def test_bos_eos_and_collate_padding(encoded):
    ds = TokenDataset(encoded, add_bos=True, add_eos=True)
    item = ds[2]
    assert item["codes"][0] == 65 and item["codes"][-1] == 66 and item["length"] == 8
    batch = ds.collate([ds[0], ds[1], ds[2]])
    assert batch["codes"].shape == (3, 63)
    assert batch["lengths"].tolist() == [27, 63, 8] and batch["labels"].tolist() == [3, 5, 9]
    assert (batch["codes"][2, 8:] == 64).all() and batch["mask"].sum(1).tolist() == [27, 63, 8]
    assert int(batch["codes"][batch["mask"]].max()) <= 66
    loader = torch.utils.data.DataLoader(ds, batch_size=2, collate_fn=ds.collate)
    assert [b["codes"].shape[0] for b in loader] == [2, 1]


def test_hierarchical_and_images(tmp_path):
    tok2 = make_tokenizer(tmp_path / "t2.safetensors", arch="vqvae2")
    write_wav(tmp_path / "in" / "a.wav", 700)
    write_wav(tmp_path / "in" / "b.wav", 333)
    encode(["encode", tmp_path / "in", "-m", tok2, "-o", tmp_path / "o2", "--quiet"])
    ds = TokenDataset(tmp_path / "o2")
    assert ds.levels == 2 and [v.size for v in ds.vocab] == [35, 67]
    batch = ds.collate([ds[0], ds[1]])
    assert [c.shape for c in batch["codes"]] == [(2, 18), (2, 36)]
    assert batch["lengths"][0].tolist() == [18, 9] and batch["labels"].tolist() == [-1, -1]

    from PIL import Image

    timg = make_tokenizer(tmp_path / "ti.safetensors", dims=2)
    for name, (h, w) in {"x/a.png": (16, 16), "y/b.png": (8, 12)}.items():
        (tmp_path / "img" / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((h, w), np.uint8)).save(tmp_path / "img" / name)
    encode(["encode", tmp_path / "img", "-m", timg, "-o", tmp_path / "oi", "--labels", "folder", "--quiet"])
    ds = TokenDataset(tmp_path / "oi")
    batch = ds.collate([ds[0], ds[1]])
    assert batch["codes"].shape == (2, 4, 4) and batch["lengths"].tolist() == [[4, 4], [2, 3]]
    assert (batch["codes"][1, 2:, :] == 64).all() and batch["labels"].tolist() == [0, 1]
    with pytest.raises(VqtokError, match="1-D"):
        TokenDataset(tmp_path / "oi", add_bos=True)


def test_refuses_mixed_tokenizers_and_bad_manifests(encoded, tmp_path):
    other = make_tokenizer(tmp_path / "other.safetensors", seed=3)
    write_wav(tmp_path / "in2" / "x.wav", 400)
    encode(["encode", tmp_path / "in2", "-m", other, "-o", tmp_path / "out2", "--quiet"])
    (encoded / "x.npy").write_bytes((tmp_path / "out2" / "x.npy").read_bytes())
    (encoded / "x.npy.json").write_bytes((tmp_path / "out2" / "x.npy.json").read_bytes())
    with open(encoded / "manifest.jsonl", "a") as f:
        f.write(json.dumps({"codes": "x.npy"}) + "\n")
    with pytest.raises(VqtokError, match="one dataset, one tokenizer"):
        TokenDataset(encoded)
    (tmp_path / "bad.jsonl").write_text("{oops\n")
    with pytest.raises(VqtokError, match=r"bad\.jsonl:1"):
        TokenDataset(tmp_path / "bad.jsonl")
    with pytest.raises(VqtokError, match="no such manifest"):
        TokenDataset(tmp_path / "nothing")
