"""Corpus runs of `vqtok encode`: the same codes and manifest whatever the workers, shards and format; resume after
a killed job; a corrupt input reported and skipped; `vqtok merge`; Parquet read back by datasets and decode."""

import json
import shutil

import numpy as np
import pytest
from clihelpers import SHARED_FSDD, make_tokenizer

from vqtok.tokenizer.codes import read_codes

pytest.importorskip("pyarrow")
from vqtok.data.parquet import CodesParquet  # noqa: E402  (needs pyarrow)


@pytest.fixture
def clips(tmp_path):
    """12 real FSDD recordings in two speaker folders (labels by folder differ from labels by name)."""
    src = tmp_path / "clips"
    names = sorted(p.name for p in SHARED_FSDD.glob("*.wav"))
    for name in names[::max(1, min(200, len(names) // 12))][:12]:  # testdata.py's few files give 12 too
        speaker = name.split("_")[1]
        (src / speaker).mkdir(parents=True, exist_ok=True)
        shutil.copy(SHARED_FSDD / name, src / speaker / name)
    return src


@pytest.fixture
def images(tmp_path):
    from PIL import Image

    src = tmp_path / "images"
    rng = np.random.default_rng(0)
    for i in range(7):
        (src / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (16 + i, 12 + 2 * i), dtype=np.uint8)).save(src / f"c{i % 2}" / f"{i}.png")
    return src


def npy_codes(folder):
    """key -> per-level arrays of a token-file run, read and checked through its manifest."""
    out = {}
    for line in (folder / "manifest.jsonl").read_text().splitlines():
        entry = json.loads(line)
        out[entry["codes"].rsplit(".", 1)[0]] = read_codes(folder / entry["codes"])
    return out


def same_codes(reference, files):
    assert sorted(reference) == sorted(files)
    for key, ref in reference.items():
        got = files[key]
        assert all(np.array_equal(a, b) for a, b in zip(ref.levels, got.levels)), key
        assert got.label == ref.label and got.source["length" if "length" in ref.source else "size"] == \
            ref.source["length" if "length" in ref.source else "size"]


@pytest.mark.parametrize("kind", ["audio", "image"])
def test_same_codes_whatever_the_workers_shards_and_format(tmp_path, cli, clips, images, kind):
    if kind == "audio":
        src, tok = clips, make_tokenizer(tmp_path / "tok.safetensors")
    else:
        src, tok = images, make_tokenizer(tmp_path / "img.safetensors", dims=2, arch="vqvae2")
    base = ["encode", src, "-m", tok, "--labels", "folder", "--quiet"]
    res = cli(*base, "-o", tmp_path / "one")
    assert res.exit_code == 0, res.output
    one = npy_codes(tmp_path / "one")
    res = cli(*base, "-o", tmp_path / "two", "--workers", "2")
    assert res.exit_code == 0, res.output
    assert (tmp_path / "two" / "manifest.jsonl").read_text() == (tmp_path / "one" / "manifest.jsonl").read_text()
    for i in range(3):
        res = cli(*base, "-o", tmp_path / "shards", "--shard", f"{i}/3")
        assert res.exit_code == 0, res.output
    assert not (tmp_path / "shards" / "manifest.jsonl").exists()
    res = cli("merge", tmp_path / "shards")
    assert res.exit_code == 0, res.output
    assert f"3 shard(s), {len(one)} items encoded once each, 0 failed" in res.stderr
    assert (tmp_path / "shards" / "manifest.jsonl").read_text() == (tmp_path / "one" / "manifest.jsonl").read_text()
    res = cli(*base, "-o", tmp_path / "pq", "--format", "parquet", "--workers", "2" if kind == "audio" else "1")
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (tmp_path / "pq").iterdir()) == ["codes-00000.parquet", "shard-00000-of-00001.json"]
    rows = {item.meta["id"].rsplit(".", 1)[0]: item for item in CodesParquet(tmp_path / "pq")}
    same_codes(one, rows)
    assert [item.meta["id"] for item in CodesParquet(tmp_path / "pq")] == \
        [json.loads(x)["codes"].rsplit(".", 1)[0] + src.joinpath("x").suffix * 0 + "." + ("wav" if kind == "audio" else "png")
         for x in (tmp_path / "one" / "manifest.jsonl").read_text().splitlines()]  # input order


def test_parquet_shards_merge_and_rerun(tmp_path, cli, clips, audio_tok):
    base = ["encode", clips, "-m", audio_tok, "-o", tmp_path / "pq", "--format", "parquet", "--shard-by", "hash",
            "--quiet"]
    for i in range(2):
        assert cli(*base, "--shard", f"{i}/2").exit_code == 0
    res = cli(*base, "--shard", "1/2")
    assert res.exit_code == 0 and "already done (12 inputs); pass --force" in res.stderr
    res = cli("merge", tmp_path / "pq")
    assert res.exit_code == 0 and "2 shard(s), 12 items encoded once each" in res.stderr
    assert not list((tmp_path / "pq").glob(".staging*"))
    ids = CodesParquet(tmp_path / "pq").ids()
    assert sorted(ids) == sorted(p.relative_to(clips).as_posix() for p in clips.rglob("*.wav"))


def test_shard_from_the_launchers_environment(tmp_path, cli, clips, audio_tok, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    res = cli("encode", clips, "-m", audio_tok, "-o", tmp_path / "out", "--quiet")
    assert res.exit_code == 0 and "shard 1/2 (from torchrun's environment)" in res.stderr
    record = json.loads((tmp_path / "out" / "shard-00001-of-00002.json").read_text())
    assert record["planned"] == 6 and len(record["done"]) == 6
    res = cli("merge", tmp_path / "out")
    assert res.exit_code == 2 and "shard(s) 0/2 not finished" in res.stderr


def test_a_killed_job_resumes_losing_nothing_and_encoding_nothing_twice(tmp_path, cli, clips, audio_tok):
    """What a job killed mid-run leaves (some files done, one array without its sidecar, a temporary file, no
    manifest) is resumed: only the missing files are encoded, the manifest is complete."""
    base = ["encode", clips, "-m", audio_tok, "-o", tmp_path / "out", "--quiet"]
    assert cli(*base).exit_code == 0
    out = tmp_path / "out"
    reference = (out / "manifest.jsonl").read_text()
    entries = [json.loads(x) for x in reference.splitlines()]
    for e in entries[5:]:
        (out / e["codes"]).unlink()
        (out / (e["codes"] + ".json")).unlink()
    (out / entries[5]["codes"]).write_bytes(b"half")  # an array whose sidecar never came
    (out / "manifest.jsonl").unlink()
    kept = {e["codes"]: (out / e["codes"]).stat().st_mtime_ns for e in entries[:5]}
    res = cli(*base, "--workers", "2")
    assert res.exit_code == 0, res.output
    assert "7 encoded, 5 already done, 0 failed" in res.stderr
    assert (out / "manifest.jsonl").read_text() == reference
    assert all((out / k).stat().st_mtime_ns == t for k, t in kept.items())  # not rewritten
    assert not list(out.rglob("*.tmp"))


def test_a_corrupt_input_is_reported_on_one_line_and_skipped(tmp_path, cli, clips, audio_tok):
    (clips / "george" / "broken.wav").write_bytes(b"RIFF....WAVEfmt garbage")
    for fmt, workers in (("npy", 2), ("parquet", 1)):
        res = cli("encode", clips, "-m", audio_tok, "-o", tmp_path / fmt, "--workers", workers, "--format", fmt,
                  "--quiet")
        assert res.exit_code == 1
        errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "broken.wav" in errors[0]
        assert "12 encoded, 0 already done, 1 failed" in res.stderr
    assert len((tmp_path / "npy" / "manifest.jsonl").read_text().splitlines()) == 12
    assert len(CodesParquet(tmp_path / "parquet")) == 12
    res = cli("merge", tmp_path / "parquet")
    assert res.exit_code == 1 and "12 items encoded once each, 1 failed" in res.stderr


def test_datasets_loads_the_parquet_output(tmp_path, cli, clips, audio_tok):
    datasets = pytest.importorskip("datasets")
    res = cli("encode", clips, "-m", audio_tok, "-o", tmp_path / "pq", "--format", "parquet", "--quiet")
    assert res.exit_code == 0
    cli("encode", clips, "-m", audio_tok, "-o", tmp_path / "npy", "--quiet")
    reference = npy_codes(tmp_path / "npy")
    ds = datasets.load_dataset("parquet", data_files=str(tmp_path / "pq" / "*.parquet"), split="train",
                               cache_dir=str(tmp_path / "hf"))
    assert len(ds) == 12
    for row in ds:
        ref = reference[row["id"].rsplit(".", 1)[0]]
        assert row["codes"][0] == ref.levels[0].tolist() and row["frames"] == [len(ref.levels[0])]


def test_decode_an_item_and_token_dataset_read_parquet(tmp_path, cli, clips, audio_tok):
    import soundfile as sf
    import torch

    from vqtok.data.tokens import TokenDataset

    cli("encode", clips, "-m", audio_tok, "-o", tmp_path / "npy", "--labels", "folder", "--quiet")
    res = cli("encode", clips, "-m", audio_tok, "-o", tmp_path / "pq", "--format", "parquet", "--labels", "folder",
              "--quiet")
    assert res.exit_code == 0
    key = sorted(p.relative_to(clips).as_posix() for p in clips.rglob("*.wav"))[3]
    npy = tmp_path / "npy" / key.replace(".wav", ".npy")
    assert cli("decode", npy, "-m", audio_tok, "-o", tmp_path / "ref.wav").exit_code == 0
    res = cli("decode", tmp_path / "pq" / "codes-00000.parquet", "--item", key, "-m", audio_tok)
    assert res.exit_code == 0, res.output
    out = tmp_path / "pq" / (npy.stem + ".decoded.wav")
    assert np.array_equal(sf.read(out)[0], sf.read(tmp_path / "ref.wav")[0])
    res = cli("decode", tmp_path / "pq", "--item", "nope.wav", "-m", audio_tok)
    assert res.exit_code == 2 and "no item with id 'nope.wav'" in res.stderr
    for split in (None, "train"):
        a, b = TokenDataset(tmp_path / "npy", split=split), TokenDataset(tmp_path / "pq", split=split)
        assert len(a) == len(b) > 0 and a.labels == b.labels and a.sizes == b.sizes and a.vocab == b.vocab
        assert all(torch.equal(x[0], y[0]) for x, y in zip(a.codes, b.codes))


def test_prior_recipes_read_parquet_codes(tmp_path, cli, clips, audio_tok):
    """data.kind codes with data.root a Parquet folder: the same CodeSet as from the token files' manifest."""
    import torch

    from vqtok import load_tokenizer
    from vqtok.prior.data import codes_from_manifest
    from vqtok.prior.recipe import PriorDataConfig

    for fmt in ("npy", "parquet"):
        assert cli("encode", clips, "-m", audio_tok, "-o", tmp_path / fmt, "--format", fmt, "--quiet").exit_code == 0
    tok = load_tokenizer(audio_tok)
    a, b = (codes_from_manifest(tok, PriorDataConfig(kind="codes", root=str(tmp_path / fmt), rule="hash"), "train")
            for fmt in ("npy", "parquet"))
    assert len(a) == len(b) > 0 and torch.equal(a.labels, b.labels) and torch.equal(a.sizes, b.sizes)
    assert all(torch.equal(x, y) for x, y in zip(a.levels + a.lengths, b.levels + b.lengths))
