"""Prior-coded token files: the range coder, bit-identical tables, round trips, archives and bad .vqz files."""

import json
import math
import shutil
import struct
import zlib

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from test_prior_train import MNIST, prior_recipe, tiny_tokenizer

from vqtok import load_tokenizer, read_codes, write_codes
from vqtok.cli import main
from vqtok.prior import coding
from vqtok.prior.arithmetic import TOTAL, RangeDecoder, RangeEncoder, frequencies
from vqtok.prior.checkpoint import load_prior, save_prior
from vqtok.prior.layout import MapLayout, SequenceLayout
from vqtok.prior.model import CodePrior
from vqtok.prior.train import train_prior
from vqtok.errors import VqtokError

FSDD = MNIST.parent / "fsdd" / "recordings"
TOK = "0123456789abcdef"  # a tokenizer fingerprint


def test_frequency_tables_are_deterministic_full_and_close_to_the_softmax():
    torch.manual_seed(0)
    logits = torch.randn(1027) * 4
    logits[5] = -200.0  # far below everything: still codable
    freqs = frequencies(logits)
    assert freqs.dtype == np.int64 and int(freqs.sum()) == TOTAL and int(freqs.min()) >= 1
    assert np.array_equal(freqs, frequencies(logits.clone()))
    p = logits.double().softmax(0).numpy()
    assert np.abs(freqs / TOTAL - p).max() < 2e-4
    assert freqs[5] == 1


def _coded(symbols, tables):
    encoder = RangeEncoder()
    for s, f in zip(symbols, tables):
        encoder.encode(s, f)
    return encoder.finish(), encoder


@pytest.mark.parametrize("n, k", [(0, 4), (1, 2), (60, 3), (300, 1027), (20000, 12)])
def test_range_coder_round_trips_within_two_bytes_of_the_information(n, k):
    rng = np.random.default_rng(n)
    tables = [frequencies(torch.from_numpy(rng.normal(size=k) * 3).float()) for _ in range(n)]
    symbols = [int(rng.choice(k, p=f / TOTAL)) for f in tables]
    symbols[: min(n, 3)] = [k - 1] * min(n, 3)  # the last symbol too
    payload, _ = _coded(symbols, tables)
    decoder = RangeDecoder(payload)
    assert [decoder.decode(f) for f in tables] == symbols
    information = -sum(math.log2(f[s] / TOTAL) for s, f in zip(symbols, tables))
    # a message shorter than its information cannot decode; the end costs at most two bytes (the width's
    # floor r = width >> 24 with width >= 2**56 costs < 2**-32 bits per symbol: nothing at this scale)
    assert information - 8 < 8 * len(payload) <= information + 16


def test_range_coder_writes_equiprobable_bits_verbatim_and_drops_trailing_zeros():
    half = np.array([TOTAL // 2, TOTAL // 2])
    bits = [int(b) for b in "10110010" "01111111" "1"]  # 0xB2 0x7F then a 1: the end is 0x80
    payload, _ = _coded(bits, [half] * len(bits))
    assert payload == bytes([0xB2, 0x7F, 0x80])
    payload, _ = _coded(bits[:16] + [0] * 40, [half] * 56)  # zeros at the end cost nothing
    assert payload == bytes([0xB2, 0x7F])


def test_range_coder_carries_into_bytes_already_written():
    """A carry out of low runs back through the bytes written (over any 0xFF there): a few hundred times in
    3,000 symbols of random tables, and the round trip must survive every one."""
    rng = np.random.default_rng(0)
    tables = [frequencies(torch.from_numpy(rng.normal(size=12) * 3).float()) for _ in range(3000)]
    symbols = [int(rng.choice(12, p=f / TOTAL)) for f in tables]
    payload, encoder = _coded(symbols, tables)
    assert encoder.carries > 50
    decoder = RangeDecoder(payload)
    assert [decoder.decode(f) for f in tables] == symbols


def test_range_decoder_refuses_what_these_tables_never_write():
    """The width is r * TOTAL plus a remainder no symbol owns; a payload of all ones (read with the last
    symbol's share, 7 / 2**24, at each step) walks into it once the widths stop being powers of two."""
    table = np.array([TOTAL - 7, 7])
    decoder = RangeDecoder(b"\xff" * 64)
    with pytest.raises(VqtokError, match="does not decode under these probabilities"):
        for _ in range(60):
            assert decoder.decode(table) == 1


def _random_priors(kind: str):
    """Random-weight priors over every layout the coder walks: maps, raster Transformer maps, sequences with
    EOS, and two-level stacks (top + a bottom conditioned on it, 2-D and 1-D)."""
    torch.manual_seed(0)
    pix = {"channels": 8, "layers": 2, "kernel_size": 3}
    gpt = {"dim": 16, "layers": 2, "heads": 2, "max_len": 64}
    base = dict(level="codes", level_index=0, codebook_size=12, num_classes=3, class_counts=[1, 1, 1])
    if kind == "pixelcnn":
        return [CodePrior(MapLayout(network="pixelcnn", shape=[4, 5], **base), pix)], [(4, 5)]
    if kind == "raster":
        return [CodePrior(MapLayout(network="transformer", shape=[4, 5], **base), gpt)], [(4, 5)]
    if kind == "eos":
        return [CodePrior(SequenceLayout(network="transformer", eos=True, max_length=40, **base), gpt)], [(37,)]
    top = {**base, "level": "top"}
    bottom = {**base, "level": "bottom", "level_index": 1, "cond_codebook_size": 12, "cond_ratio": 2}
    if kind == "vqvae2":
        return ([CodePrior(MapLayout(network="pixelcnn", shape=[2, 3], **top), pix),
                 CodePrior(MapLayout(network="pixelcnn", shape=[4, 6], **bottom), pix)], [(2, 3), (4, 6)])
    return ([CodePrior(SequenceLayout(network="transformer", eos=True, max_length=40, **top), gpt),
             CodePrior(SequenceLayout(network="transformer", **bottom), gpt)], [(9,), (17,)])


@pytest.mark.parametrize("kind", ["pixelcnn", "raster", "eos", "vqvae2", "vqvae2_audio"])
def test_payload_round_trip_and_encoder_tables_equal_decoder_tables(kind, monkeypatch):
    priors, shapes = _random_priors(kind)
    rng = np.random.default_rng(1)
    levels = [rng.integers(0, 12, shape) for shape in shapes]
    seen: list[torch.Tensor] = []

    def recording(logits):
        seen.append(logits.clone())
        return frequencies(logits)

    monkeypatch.setattr(coding, "frequencies", recording)
    data = coding.compress(priors, TOK, levels, 1, 1, {"kind": "image", "size": [8, 8]})
    encoded, seen[:] = list(seen), []
    vqz = coding.unpack(data, "x.vqz")
    decoded = coding.decode_files(priors, [vqz])[0][0]
    assert all(np.array_equal(a, b) for a, b in zip(decoded, levels))
    assert len(seen) == len(encoded) == sum(math.prod(s) for s in shapes) + sum(p.layout.eos for p in priors)
    assert all(torch.equal(a, b) for a, b in zip(encoded, seen))  # bit-identical logits at every step
    nll = 0.0
    with torch.no_grad():
        for i, (prior, codes) in enumerate(zip(priors, levels)):
            cond = torch.from_numpy(levels[0])[None] if i else None
            lengths = torch.tensor([codes.shape[0]]) if prior.layout.dims == 1 else None
            nll += float(prior.eval().nll(torch.from_numpy(codes)[None], torch.tensor([1]), cond, lengths)[0])
    assert 8 * vqz.header.payload_bytes <= nll / math.log(2) * 1.01 + 9


@pytest.mark.parametrize("kind", ["pixelcnn", "vqvae2", "eos"])
def test_files_coded_in_a_batch_are_byte_identical_to_files_coded_alone(kind):
    priors, shapes = _random_priors(kind)
    rng = np.random.default_rng(2)
    # 18 items in batches of 17 and 1: 16 maps and more is where NNPACK would take over PyTorch's convolution
    items = [coding.CodedItem([rng.integers(0, 12, s) for s in shapes], i % 3, i % 3, {}) for i in range(18)]
    if kind == "eos":  # sequences of different lengths never share a batch, nor Transformer items at all
        items[1].levels = [rng.integers(0, 12, (20,))]
    alone = [coding.compress(priors, TOK, it.levels, it.label, it.coded_class, {}) for it in items]
    together = coding.compress_many(priors, TOK, items, batch=17)
    assert together == alone
    assert coding.batchable(priors) == (kind != "eos")
    vqzs = [coding.unpack(data, f"{i}.vqz") for i, data in enumerate(together)]
    for batch in (16, 1):
        for item, decoded in zip(items, coding.decode_files(priors, vqzs, batch=batch)):
            assert len(decoded) == 1 and all(np.array_equal(a, b) for a, b in zip(decoded[0], item.levels))


@pytest.mark.parametrize("kind", ["pixelcnn", "raster", "eos", "vqvae2", "vqvae2_audio"])
def test_an_archive_is_one_message_at_its_information_and_decodes_every_entry(kind, monkeypatch):
    priors, shapes = _random_priors(kind)
    rng = np.random.default_rng(3)
    suffix = ".npy" if len(shapes) == 1 else ".npz"
    items = [coding.CodedItem([rng.integers(0, 12, s) for s in shapes], i % 3, i % 3,
                              {"kind": "image", "size": [8, 8 + i]}, f"d{i % 2}/f{i}{suffix}") for i in range(11)]
    if kind == "eos":  # another length: its own group in the stream
        items[4].levels = [rng.integers(0, 12, (21,))]
    information = []  # bits of every code the encoder takes, under the table it takes it with

    class Counting(RangeEncoder):
        def encode(self, symbol, freqs):
            information.append(-math.log2(freqs[symbol] / TOTAL))
            super().encode(symbol, freqs)

    monkeypatch.setattr(coding, "RangeEncoder", Counting)
    vqz = coding.unpack(coding.compress_archive(priors, TOK, items, "runs/p", batch=4), "a.vqz")
    head = vqz.header
    assert len(information) == sum(lv.size + p.layout.eos for it in items for lv, p in zip(it.levels, priors))
    assert sum(information) - 8 < 8 * head.payload_bytes <= sum(information) + 16  # one end for all 11
    assert head.is_archive and head.batch == (4 if coding.batchable(priors) else 1)
    assert [e.name for e in head.entries] == [it.name for it in items]
    assert [e.source for e in head.entries] == [it.source for it in items] and head.prior_path == "runs/p"
    decoded = coding.decode_files(priors, [vqz])[0]
    for item, levels in zip(items, decoded):
        assert all(np.array_equal(a, b) for a, b in zip(levels, item.levels))


def test_archive_entries_are_named_once_each_and_inside_the_output_folder():
    priors, shapes = _random_priors("pixelcnn")
    item = coding.CodedItem([np.zeros(shapes[0], dtype=np.int64)], 1, 1, {}, "ok.npy")
    vqz = coding.unpack(coding.compress_archive(priors, TOK, [item]), "a.vqz")
    for bad in ("../up.npy", "/abs.npy", "x.npz", "a\\b.npy"):
        vqz.header.entries[0].name = bad
        with pytest.raises(VqtokError, match="unreadable header .*not a relative .npy path"):
            coding.unpack(coding.pack(vqz.header, vqz.payload), "a.vqz")
    vqz.header.entries = [coding.VqzEntry(e.shapes, 1, 1, {}, name) for e, name in
                          zip(vqz.header.entries * 2, ("a.npy", "a.npy"))]  # the same name twice
    with pytest.raises(VqtokError, match="unreadable header .*2 entries, 1 distinct names"):
        coding.unpack(coding.pack(vqz.header, vqz.payload), "a.vqz")
    vqz.header.entries[1].name = None  # entries without names: only a single token file
    with pytest.raises(VqtokError, match="unreadable header .*2 entries, 1 distinct names"):
        coding.unpack(coding.pack(vqz.header, vqz.payload), "a.vqz")


def test_binary_header_round_trips_and_is_small():
    priors, shapes = _random_priors("vqvae2")
    levels = [np.ones(s, dtype=np.int64) for s in shapes]
    bare = coding.unpack(coding.compress(priors, TOK, levels, None, 0, {}), "x.vqz")
    # prefix 10 + fixed 31 + two codebook sizes 8 + packing 1 + entry (label, class 4; two levels of rank 2, 9
    # each) + CRC32 4
    assert bare.overhead_bytes == 10 + 31 + 8 + 1 + 4 + 2 * 9 + 4
    source = {"kind": "image", "path": "d/ü.png", "size": [8, 12], "channels": 1}
    data = coding.compress(priors, TOK, levels, 7, 2, source, "runs/p")
    vqz = coding.unpack(data, "x.vqz")
    assert vqz.header == coding.VqzHeader(
        prior=coding.prior_fingerprint(priors), tokenizer=TOK, codebook_sizes=[12, 12],
        entries=[coding.VqzEntry([[2, 3], [4, 6]], 7, 2, source)], payload_bytes=len(vqz.payload),
        payload_crc32=zlib.crc32(vqz.payload), batch=1, prior_path="runs/p")
    assert coding.pack(vqz.header, vqz.payload) == data
    # 1,000 entries: the per-entry table is zlib-packed to a few bytes each
    items = [coding.CodedItem(levels, i % 10, i % 10, {"kind": "image", "size": [28, 28]}, f"m{i}.npz")
             for i in range(1000)]
    header = coding._header(priors, TOK, items, b"", 32, None)
    assert len(coding.pack(header, b"")) < 6 * 1000
    assert coding.unpack(coding.pack(header, b""), "a.vqz").header == header


# ----------------------------------------------------------------------------------- trained priors, CLI
@pytest.fixture(scope="module")
def mnist_run(tmp_path_factory):
    """A tiny class-conditional PixelCNN trained for a few seconds on MNIST codes, and six test token files."""
    root = tmp_path_factory.mktemp("mnist")
    tok_path = tiny_tokenizer(root / "tok.safetensors")
    recipe = prior_recipe(tok_path, "train.max_steps=20", "train.lr=0.01", "data.max_items=200",
                          "train.valid_every=20", "train.save_every=20", "samples=0")
    priors = train_prior(recipe, root / "run", progress=False, plot=False)
    tok = load_tokenizer(root / "run" / "tokenizer.safetensors")
    stored = torch.load(root / "run" / "codes" / "test.pt", weights_only=True)
    files = []
    for i in range(6):
        codes, label = stored["levels"][0][i], int(stored["labels"][i])
        path = root / "codes" / f"m{i}.npy"
        path.parent.mkdir(exist_ok=True)
        write_codes(path, codes, tok, {"kind": "image", "path": None, "size": [28, 28], "channels": 1}, label)
        files.append(path)
    return root / "run", priors["codes"], files


@pytest.fixture(scope="module")
def fsdd_run(tmp_path_factory):
    """A tiny class-conditional Transformer trained on real FSDD clips, and three test clips encoded by vqtok encode."""
    root = tmp_path_factory.mktemp("fsdd")
    data = root / "data"  # every digit, takes 5 and 6 (training) and 0 (validation) of one speaker
    data.mkdir()
    for digit in range(10):
        for take in (0, 5, 6):
            shutil.copy(FSDD / f"{digit}_george_{take}.wav", data)
    tok_path = tiny_tokenizer(root / "tok.safetensors", dims=1)
    recipe = prior_recipe(tok_path, "train.max_steps=20", "train.lr=0.01", "samples=0", "train.valid_every=20",
                          "train.save_every=20", "model.config={dim: 16, layers: 1, heads: 2, max_len: 1024}",
                          audio_root=data)
    priors = train_prior(recipe, root / "run", progress=False, plot=False)
    clips = root / "clips"  # other speakers' test takes
    clips.mkdir()
    for name in ("3_jackson_0.wav", "7_lucas_1.wav", "9_nicolas_2.wav"):
        shutil.copy(FSDD / name, clips / name)
    result = CliRunner().invoke(main, ["encode", str(clips), "-m", str(tok_path), "-o", str(root / "codes"),
                                       "--labels", "fsdd", "--quiet"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return root / "run", priors["codes"], sorted((root / "codes").glob("*.npy"))


def _nll_bits(prior: CodePrior, file) -> float:
    codes = torch.from_numpy(file.levels[0])[None]
    lengths = torch.tensor([codes.shape[1]]) if prior.layout.dims == 1 else None
    with torch.no_grad():
        return float(prior.eval().nll(codes, torch.tensor([file.label]), None, lengths)[0]) / math.log(2)


@pytest.mark.parametrize("which", ["mnist_run", "fsdd_run"])
def test_compress_decompress_round_trip_at_the_priors_nll(which, request, tmp_path):
    run, prior, files = request.getfixturevalue(which)
    payload_bits, nll_bits = 0, 0.0
    for path in files:
        original = read_codes(path)
        packed, back = tmp_path / (path.stem + ".vqz"), tmp_path / "back" / path.name
        for args in (["compress", str(path), "-p", str(run), "-o", str(packed)],
                     ["decompress", str(packed), "-o", str(back)]):
            result = CliRunner().invoke(main, args, catch_exceptions=False)
            assert result.exit_code == 0, result.output
        restored = read_codes(back)
        assert np.array_equal(restored.levels[0], original.levels[0])
        assert restored.label == original.label is not None and restored.source == original.source
        vqz = coding.read_vqz(packed)
        payload_bits += 8 * vqz.header.payload_bytes
        nll_bits += _nll_bits(prior, original)
    # the payload is the prior's NLL plus < 1% (table quantisation) and at most 9 bits per file (termination)
    assert nll_bits <= payload_bits + len(files) <= nll_bits * 1.01 + 9 * len(files)
    result = CliRunner().invoke(main, ["info", str(packed), "--json"], catch_exceptions=False)
    info = json.loads(result.output)
    assert info["bits_per_code"] == pytest.approx(8 * vqz.header.payload_bytes / vqz.header.num_codes)
    assert info["ratio_to_raw"] == pytest.approx(vqz.header.raw_bits / (8 * vqz.header.payload_bytes))
    text = CliRunner().invoke(main, ["info", str(packed)]).output
    assert "bits per code" in text and "smaller than the raw codes" in text


def test_a_folder_compresses_in_batches_to_the_same_files_and_decompresses_to_a_folder(mnist_run, tmp_path):
    run, _, files = mnist_run
    packed, back = tmp_path / "packed", tmp_path / "back"
    for args in (["compress", str(files[0].parent), "-p", str(run), "-o", str(packed)],
                 ["decompress", str(packed), "-o", str(back)]):
        result = CliRunner().invoke(main, args, catch_exceptions=False)
        assert result.exit_code == 0, result.output
    assert sorted(p.name for p in packed.iterdir()) == [p.stem + ".vqz" for p in files]
    for path in files:
        original, restored = read_codes(path), read_codes(back / path.name)
        assert np.array_equal(restored.levels[0], original.levels[0]) and restored.label == original.label
    alone = tmp_path / "alone.vqz"  # the batch of six gives each file the bytes it gets alone
    assert CliRunner().invoke(main, ["compress", str(files[3]), "-p", str(run), "-o", str(alone)]).exit_code == 0
    assert alone.read_bytes() == (packed / (files[3].stem + ".vqz")).read_bytes()
    (packed / "m2.vqz").write_bytes((packed / "m2.vqz").read_bytes()[:-1])  # one bad file: nothing written
    result = CliRunner().invoke(main, ["decompress", str(packed), "-o", str(tmp_path / "again")])
    assert result.exit_code == 2 and "m2.vqz: truncated" in result.output and not (tmp_path / "again").exists()


def test_a_folder_compresses_to_one_archive_and_back_to_the_folder(mnist_run, tmp_path):
    run, _, files = mnist_run
    folder = tmp_path / "codes"  # a nested layout, mirrored back
    for i, path in enumerate(files):
        for src in (path, path.with_name(path.name + ".json")):
            dest = folder / f"d{i % 2}" / src.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, dest)
    archive, back = tmp_path / "all.vqz", tmp_path / "back"
    for args in (["compress", str(folder), "-p", str(run), "-o", str(archive)],
                 ["decompress", str(archive), "-o", str(back)]):
        result = CliRunner().invoke(main, args, catch_exceptions=False)
        assert result.exit_code == 0, result.output
    for i, path in enumerate(files):
        original, restored = read_codes(path), read_codes(back / f"d{i % 2}" / path.name)
        assert np.array_equal(restored.levels[0], original.levels[0]) and restored.label == original.label
        assert restored.source == original.source
    vqz = coding.read_vqz(archive)
    singles = tmp_path / "singles"
    assert CliRunner().invoke(main, ["compress", str(folder), "-p", str(run), "-o", str(singles)]).exit_code == 0
    single = [coding.read_vqz(p) for p in sorted(singles.rglob("*.vqz"))]
    # one header instead of six, one end instead of six
    assert len(archive.read_bytes()) < sum(v.overhead_bytes + v.header.payload_bytes for v in single) - 150
    info = json.loads(CliRunner().invoke(main, ["info", str(archive), "--json"]).output)
    assert info["files"] == 6 and info["bits_per_file"] == pytest.approx(8 * vqz.header.payload_bytes / 6)
    assert "archive of 6 prior-coded token files" in CliRunner().invoke(main, ["info", str(archive)]).output
    result = CliRunner().invoke(main, ["decompress", str(archive), "-o", str(tmp_path / "x.npy")])
    assert result.exit_code == 2 and "is an archive of 6 token files; -o is the folder" in result.output
    shutil.copy(archive, singles / "all.vqz")  # an archive inside a folder of .vqz files: refused, nothing written
    result = CliRunner().invoke(main, ["decompress", str(singles), "-o", str(tmp_path / "again")])
    assert result.exit_code == 2 and "all.vqz: an archive of 6 token files" in result.output
    assert not (tmp_path / "again").exists()
    result = CliRunner().invoke(main, ["decompress", str(archive), "-o", str(back)])
    assert result.exit_code == 2 and "already exists" in result.output


def _repack_version(data: bytes, version: int) -> bytes:
    length = struct.unpack_from("<I", data, 6)[0]
    head = data[:4] + struct.pack("<H", version) + data[6 : 10 + length]
    return head + struct.pack("<I", zlib.crc32(head)) + data[14 + length :]


def _flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x10]) + data[at + 1 :]


@pytest.mark.parametrize("damage, message", [
    (lambda d: b"", "empty file"),
    (lambda d: d[:-1], "truncated"),
    (lambda d: d[:40], "truncated"),
    (lambda d: _flip(d, 30), "header is corrupted"),
    (lambda d: _flip(d, len(d) - 1), "payload is corrupted"),
    (lambda d: _repack_version(d, 4), "format version 4 is newer than this vqtok reads"),
    (lambda d: _repack_version(d, 2), "format version 2 is older than this vqtok reads"),
    (lambda d: _repack_version(d, 1), "format version 1 is older than this vqtok reads"),
    (lambda d: _flip(d, 12), "header is corrupted"),  # the prior's fingerprint
    (lambda d: b"PK\x03\x04" + d[4:], "not a .vqz file"),
])
def test_bad_vqz_files_are_one_line_errors_and_write_nothing(mnist_run, tmp_path, damage, message):
    run, _, files = mnist_run
    good = tmp_path / "good.vqz"
    assert CliRunner().invoke(main, ["compress", str(files[0]), "-p", str(run), "-o", str(good)]).exit_code == 0
    bad = tmp_path / "bad.vqz"
    bad.write_bytes(damage(good.read_bytes()))
    result = CliRunner().invoke(main, ["decompress", str(bad), "-p", str(run), "-o", str(tmp_path / "out.npy")])
    assert result.exit_code == 2 and message in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "out.npy").exists()


@pytest.mark.parametrize("damage, message", [
    (lambda d: d[:-1], "truncated"),
    (lambda d: _flip(d, len(d) - 3), "payload is corrupted"),
    (lambda d: _flip(d, 45), "header is corrupted"),
])
def test_a_bad_archive_is_a_one_line_error_and_writes_no_file(mnist_run, tmp_path, damage, message):
    run, _, files = mnist_run
    good = tmp_path / "all.vqz"
    assert CliRunner().invoke(main, ["compress", str(files[0].parent), "-p", str(run), "-o", str(good)]).exit_code == 0
    bad = tmp_path / "bad.vqz"
    bad.write_bytes(damage(good.read_bytes()))
    result = CliRunner().invoke(main, ["decompress", str(bad), "-p", str(run), "-o", str(tmp_path / "out")])
    assert result.exit_code == 2 and message in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


def test_another_prior_is_refused_naming_both(mnist_run, tmp_path):
    run, prior, files = mnist_run
    packed = tmp_path / "m.vqz"
    assert CliRunner().invoke(main, ["compress", str(files[0]), "-p", str(run), "-o", str(packed)]).exit_code == 0
    other = tmp_path / "other"
    shutil.copytree(run, other, ignore=shutil.ignore_patterns("codes", "samples"))
    changed = load_prior(run / "prior.safetensors")
    with torch.no_grad():
        changed.net.head[-1].bias[0] += 1.0
    save_prior(changed, other / "prior.safetensors", changed.tokenizer, changed.train_info)
    result = CliRunner().invoke(main, ["decompress", str(packed), "-p", str(other), "-o", str(tmp_path / "o.npy")])
    want = coding.read_vqz(packed).header.prior
    assert result.exit_code == 2 and want in result.output and "prior given is" in result.output
    assert want != coding.prior_fingerprint([changed]) and not (tmp_path / "o.npy").exists()
    # without -p, the prior recorded at compression is used
    result = CliRunner().invoke(main, ["decompress", str(packed), "-o", str(tmp_path / "o.npy")])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(main, ["decompress", str(packed), "-o", str(tmp_path / "o.npy")])
    assert result.exit_code == 2 and "already exists" in result.output
