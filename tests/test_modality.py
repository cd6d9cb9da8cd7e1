"""A third kind of input from this file alone: multichannel 1-D arrays (sensor or EEG recordings) as .npy files,
through `vqtok encode` / `vqtok decode`, the manifest and the codec; and the built-in modalities found by config."""

from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from vqtok import VqtokError, load_tokenizer, read_codes
from vqtok.cli import main
from vqtok.modality import MODALITIES, Audio, Decoded, Image, Modality, Prepared, modality_of, register
from vqtok.tokenizer import LevelConfig, TokenizerConfig, build_tokenizer, save_tokenizer


class Arrays(Modality):
    """(C, T) float32 arrays in .npy files (several channels: EEG, sensors), encoded whole in one call and written
    back as .npy."""

    name = "array"
    extensions = (".npy",)
    decoded_suffix = ".npy"
    best_metric = "mse"

    def matches(self, config) -> bool:
        return config.dims == 1 and config.in_channels > 1

    def open(self, codec, path: Path) -> Prepared:
        x = np.load(path, allow_pickle=False).astype(np.float32)
        if x.ndim != 2 or x.shape[0] != codec.tok.config.in_channels:
            raise VqtokError(f"{path}: expected ({codec.tok.config.in_channels}, T), got {x.shape}")
        return self.prepare(codec, x, str(path))

    def prepare(self, codec, x, path=None) -> Prepared:
        x = np.asarray(x, np.float32)
        return Prepared(x, {"kind": self.name, "path": path, "length": x.shape[1], "channels": x.shape[0]})

    def encode(self, codec, items) -> list:
        return [codec.tok.encode(torch.from_numpy(item.data)) for item in items]  # (C, T) -> (T',)

    def decode(self, codec, codes, source, sample_rate, postfilter) -> Decoded:
        return Decoded(codec.tok.decode(codes, size=int(source["length"])).cpu().numpy())  # (C, T)

    def write(self, out: Path, decoded: Decoded, what) -> None:
        np.save(out, decoded.data, allow_pickle=False)

    def manifest_fields(self, source, shapes) -> dict:
        return {"length": source["length"], "channels": source["channels"], "frames": [s[0] for s in shapes]}


@pytest.fixture
def arrays():
    modality = register(Arrays())
    yield modality
    MODALITIES.remove(modality)


def array_tokenizer(path: Path) -> Path:
    torch.manual_seed(0)
    cfg = TokenizerConfig(dims=1, in_channels=3, sample_rate=250, net=LevelConfig(
        channels=[8], strides=[4], res_depth=1, code_dim=4, codebook_size=16))
    model = build_tokenizer(cfg)
    model.train()(torch.randn(4, 3, 64))  # initialise the codebook
    save_tokenizer(model.eval(), path)
    return path


def test_a_third_modality_encodes_and_decodes_through_the_cli(tmp_path, arrays):
    tok_path = array_tokenizer(tmp_path / "eeg.safetensors")
    rng = np.random.default_rng(0)
    (tmp_path / "in" / "s1").mkdir(parents=True)
    signals = {"s1/a.npy": rng.standard_normal((3, 101)), "b.npy": rng.standard_normal((3, 40))}
    for name, x in signals.items():
        np.save(tmp_path / "in" / name, x.astype(np.float32))
    runner = CliRunner()
    res = runner.invoke(main, ["encode", str(tmp_path / "in"), "-m", str(tok_path), "-o", str(tmp_path / "codes"),
                               "--quiet"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    manifest = (tmp_path / "codes" / "manifest.jsonl").read_text().splitlines()
    assert [line.split('"codes": ')[1].split(",")[0] for line in manifest] == ['"b.npy"', '"s1/a.npy"']
    assert '"kind": "array", "length": 101, "channels": 3, "frames": [26]' in manifest[1]
    res = runner.invoke(main, ["decode", str(tmp_path / "codes"), "-o", str(tmp_path / "dec")], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    tok = load_tokenizer(tok_path)
    for name, x in signals.items():
        file = read_codes(tmp_path / "codes" / name, tok)
        with torch.no_grad():
            codes = tok.encode(torch.from_numpy(x.astype(np.float32)))
            expected = tok.decode(codes, size=x.shape[1]).numpy()
        assert np.array_equal(file.levels[0], codes.numpy())
        assert np.array_equal(np.load(tmp_path / "dec" / name), expected)  # (3, T), bit for bit


def test_modalities_by_config(arrays):
    assert isinstance(modality_of(TokenizerConfig(dims=1, sample_rate=8000)), Audio)
    assert modality_of(TokenizerConfig(dims=1, in_channels=3, sample_rate=250)) is arrays  # registered: asked first
    assert isinstance(modality_of(TokenizerConfig(dims=2)), Image)
    with pytest.raises(VqtokError, match="needs a sample_rate"):
        modality_of(TokenizerConfig(dims=1))
    with pytest.raises(VqtokError, match="a waveform tokenizer \\(dims 1\\) needs its rate in Hz"):
        build_tokenizer(TokenizerConfig(dims=1))  # refused where it is built, not at its first encode
    with pytest.raises(VqtokError, match="an image tokenizer \\(dims 2\\) has none"):
        build_tokenizer(TokenizerConfig(dims=2, sample_rate=8000))
    with pytest.raises(VqtokError, match="arch 'stacked' is for dims 1, got dims 2"):  # an arch says what it takes
        build_tokenizer(TokenizerConfig(arch="stacked", dims=2, top=TokenizerConfig().net))


def test_sample_files_by_modality(arrays):
    names = ["sample_000", "sample_001"]
    assert Image().sample_files(None, names) == [Path("samples.png")]
    assert Image().sample_files(Path("out"), names) == [Path("out/samples.png")]
    assert Image().sample_files(Path("threes.png"), names) == [Path("threes.png")]
    assert Audio().sample_files(None, names) == [Path("samples/sample_000.wav"), Path("samples/sample_001.wav"),
                                                 Path("samples/spectrograms.png")]
    with pytest.raises(VqtokError, match="audio samples are written as WAV files into a folder"):
        Audio().sample_files(Path("x.wav"), names)
    with pytest.raises(VqtokError, match="vqtok sample writes no array samples"):
        arrays.sample_files(None, names)  # a modality that does not say how samples are written


def test_a_modality_without_prior_methods_says_so(arrays):
    """The prior methods of a modality that does not define them: no shifts, no rates, no samples; clear errors."""
    from types import SimpleNamespace

    assert arrays.prior_shifts(SimpleNamespace(shifts=0), "train", None) == [None]
    with pytest.raises(VqtokError, match="data.shifts: no shifted copies of array inputs"):
        arrays.prior_shifts(SimpleNamespace(shifts=2), "train", None)
    with pytest.raises(VqtokError, match="encode them with vqtok encode and train on the token files"):
        arrays.encode_for_prior(None, None, range(2), None)
    assert arrays.prior_rates(None, 100.0, 2, 50.0) == {}
    assert arrays.write_step_samples(Path("unused"), 1, None, [], None, None) is None
    with pytest.raises(VqtokError, match="vqtok sample decodes no array samples"):
        arrays.decode_samples(None, [])
    with pytest.raises(VqtokError, match="vqtok sample writes no array token files"):
        arrays.sample_source(None, torch.zeros(3))
