"""ONNX export (integrations/onnx.py) against torch, and the torch-free runner (ort_runner.py) against vqtok's
token files: codes, decoded output, sidecars, the numpy speech level, PNG reading, bad input."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner

pytest.importorskip("onnxruntime", reason="needs onnxruntime (pip install vqtok[onnx]; .ci/run installs it)")
pytest.importorskip("onnx", reason="needs onnx (pip install vqtok[onnx]; .ci/run installs it)")

from PIL import Image  # noqa: E402

from vqtok import load_tokenizer, save_tokenizer  # noqa: E402
from vqtok.cli import main  # noqa: E402
from vqtok.codec import Codec  # noqa: E402
from vqtok.data.audio import load_audio  # noqa: E402
from testdata import SHARED_DATA  # noqa: E402
from vqtok.data.images import load_image  # noqa: E402
from vqtok.integrations import ort_runner  # noqa: E402
from vqtok.integrations.onnx import OPSET, PostfilterGraph, dft_tables, export_onnx, read_metadata  # noqa: E402
from vqtok.integrations.ort_runner import OrtTokenizer, RunnerError  # noqa: E402
from vqtok import speech_level  # noqa: E402
from vqtok.tokenizer import LevelConfig, TokenizerConfig, build_tokenizer  # noqa: E402
from vqtok.tokenizer.codes import read_codes, write_codes  # noqa: E402
from vqtok.tokenizer.heads import HeadConfig  # noqa: E402
from vqtok.tokenizer.postfilter import sharpen  # noqa: E402

RUNNER = Path(ort_runner.__file__)
DATA = SHARED_DATA  # ../shared/data, or the few files of tests/fixtures/data in a clone alone
SPEECH = sorted((DATA / "speech" / "test").rglob("*.flac"))
SPEECH = (SPEECH * 3)[: max(3, len(SPEECH))]  # a clone alone has one test recording: the tests take it again


@pytest.fixture(scope="module")
def speech8k_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx") / "speech-8k"
    export_onnx(load_tokenizer("speech-8k"), out)
    return out


@pytest.fixture(scope="module")
def mnist_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx") / "mnist"
    result = CliRunner().invoke(main, ["export", "mnist", "--onnx", str(out)])
    assert result.exit_code == 0, result.output
    assert "opset 18" in result.output and "encoder.onnx" in result.output
    return out


def test_export_refuses_to_overwrite_without_force(mnist_dir):
    result = CliRunner().invoke(main, ["export", "mnist", "--onnx", str(mnist_dir)])
    assert result.exit_code == 2
    assert result.output.strip().endswith(
        f"encoder.onnx: already exists; pass --force to overwrite the graphs in {mnist_dir}")


def digit_png(path, index=0):
    """An MNIST test digit written as a greyscale PNG."""
    from vqtok.data.mnist import load_mnist

    images, _ = load_mnist(DATA / "mnist", "test")
    Image.fromarray(np.asarray(images[index], np.uint8)).save(path)
    return path


def test_metadata_names_the_tokenizer(speech8k_dir):
    tok = load_tokenizer("speech-8k")
    meta = read_metadata(speech8k_dir / "encoder.onnx")
    summary = json.loads(meta["vqtok.tokenizer"])
    assert summary["fingerprint"] == tok.fingerprint and summary["codes_fingerprint"] == tok.codes_fingerprint
    assert summary["name"] == "speech-8k" and summary["hop"] == 25 and summary["block_frames"] == tok.block_frames
    assert json.loads(meta["vqtok.config"])["sample_rate"] == 8000
    assert meta["vqtok.opset"] == str(OPSET) and "no fp64" in meta["vqtok.search"]
    assert json.loads(meta["vqtok.context"]) == {"encode_left": 450, "encode_right": 450, "decode_left": 18,
                                                 "decode_right": 18}
    assert read_metadata(speech8k_dir / "postfilter.onnx")["vqtok.graph"] == "postfilter"
    assert sorted(p.name for p in speech8k_dir.iterdir()) == ["decoder.onnx", "encoder.onnx", "postfilter.onnx",
                                                              "tokenizer.json"]


def test_graphs_match_torch_on_a_batch_of_any_length(speech8k_dir):
    tok = load_tokenizer("speech-8k")
    ort = OrtTokenizer(speech8k_dir)
    first, second = (load_audio(f, 8000)[0] for f in SPEECH[:2])
    x = np.stack([first[:20011], second[-20011:]])[:, None]  # (2, 1, 20011): not whole hops, two different clips
    codes = ort.encoder.run(None, {"input": x})[0]
    ref = tok.encode(torch.from_numpy(x)).numpy()
    assert codes.shape == ref.shape == (2, 801)
    assert (codes == ref).mean() > 0.99  # fp32 argmin against torch's exact search: near-ties may differ
    y = ort.decoder.run(None, {"codes": ref})[0]
    with torch.no_grad():
        y_ref = tok.decode(torch.from_numpy(ref), postfilter=False).numpy()
    assert y.shape == y_ref.shape == (2, 1, 801 * 25)
    assert np.abs(y - y_ref).max() < 1e-5
    post = ort.postfilter_graph.run(None, {"audio": y_ref[:, 0, :19999]})[0]
    want = np.stack([sharpen(torch.from_numpy(row), 8000, tok.postfilter).numpy() for row in y_ref[:, 0, :19999]])
    assert post.shape == (2, 19999) and np.abs(post - want).max() < 1e-5


def test_dft_tables_invert_each_other_and_match_the_fft():
    cos, sin, icos, isin = dft_tables(16)
    x = torch.randn(3, 16)
    spec = torch.fft.rfft(x)
    assert torch.allclose(x @ cos, spec.real, atol=1e-5) and torch.allclose(x @ sin, spec.imag, atol=1e-5)
    assert torch.allclose((x @ cos) @ icos + (x @ sin) @ isin, x, atol=1e-5)


def test_postfilter_module_equals_sharpen_for_odd_lengths():
    graph = PostfilterGraph(8000, 1.3)
    for n in (1, 63, 64, 65, 1000):
        x = torch.randn(n) * 0.1
        assert torch.allclose(graph(x[None])[0], sharpen(x, 8000, 1.3), atol=1e-6)


def tiny(path, **net):
    torch.manual_seed(0)
    cfg = TokenizerConfig(
        arch="vqvae2" if "top" in net else "vqvae", dims=1, sample_rate=8000,
        net=LevelConfig(channels=[8, 16], strides=[4, 5], res_depth=1, dilation_growth=3, code_dim=8,
                        codebook_size=64, **{k: v for k, v in net.items() if k != "top"}),
        top=net.get("top"))
    model = build_tokenizer(cfg)
    model.train()(torch.cumsum(torch.randn(4, 1, 4000), -1) * 0.05)
    save_tokenizer(model.eval(), path)
    return load_tokenizer(path)


@pytest.mark.parametrize("kind", ["vqvae2", "istft"])
def test_two_levels_and_the_istft_head_export(tmp_path, kind):
    net = ({"top": LevelConfig(channels=[16], strides=[2], res_depth=1, code_dim=8, codebook_size=32)}
           if kind == "vqvae2" else {"decoder_head": "istft", "head": HeadConfig(width=16, blocks=1, expand=2)})
    tok = tiny(tmp_path / "tok.safetensors", **net)
    export_onnx(tok, tmp_path / "onnx")
    ort = OrtTokenizer(tmp_path / "onnx")
    x = (np.cumsum(np.random.default_rng(0).standard_normal(3000)) * 0.05).astype(np.float32)
    codes = ort.encode(x)
    ref = tok.encode_long(x)
    ref = ref if isinstance(ref, list) else [ref]
    assert [c.shape for c in codes] == [tuple(r.shape) for r in ref]
    assert all((c == r.numpy()).mean() > 0.98 for c, r in zip(codes, ref))
    y = ort.decode([r.numpy() for r in ref], 3000)
    y_ref = tok.decode_long(ref if len(ref) > 1 else ref[0], size=3000)[0].numpy()
    assert np.abs(y - y_ref).max() < 1e-4 * np.abs(y_ref).max()


# ------------------------------------------------------------------ runner
def test_runner_writes_vqtok_encode_token_files_and_reads_them(speech8k_dir, tmp_path):
    tok = load_tokenizer("speech-8k")
    ort = OrtTokenizer(speech8k_dir)
    clip = SPEECH[0]
    side = ort.encode_file(clip, tmp_path / "ort.npy")
    codec = Codec(tok)
    item = codec.open(clip)
    codes = codec.encode([item])[0]
    write_codes(tmp_path / "torch.npy", codes, tok, item.source)
    ours, theirs = (json.loads(p.read_text()) for p in (side, tmp_path / "torch.npy.json"))
    share = (np.load(tmp_path / "ort.npy") == np.load(tmp_path / "torch.npy")).mean()
    assert share > 0.99
    if share == 1.0:  # the same array: the same sidecar, hash and all
        assert ours == theirs
    else:
        assert {k: v for k, v in ours.items() if k != "array_sha256"} == \
               {k: v for k, v in theirs.items() if k != "array_sha256"}
    assert ours["source"]["gain_db"] == theirs["source"]["gain_db"] and ours["source"]["orig_sample_rate"] == 16000
    # vqtok reads the runner's file; the runner decodes vqtok's, as vqtok decode does
    file = read_codes(tmp_path / "ort.npy", tok)
    ort.decode_file(tmp_path / "torch.npy", tmp_path / "ort.wav")
    codec.write(tmp_path / "torch.wav", codec.decode(read_codes(tmp_path / "torch.npy", tok).levels, theirs["source"]))
    a, rate = sf.read(tmp_path / "ort.wav")
    b, _ = sf.read(tmp_path / "torch.wav")
    assert rate == 8000 and a.shape == b.shape == (theirs["source"]["length"],)
    assert np.abs(a - b).max() <= 2 / 32768  # 16-bit samples, a rounding step apart at most
    assert file.levels[0].shape == (theirs["source"]["length"] // 25 + (theirs["source"]["length"] % 25 > 0),)


def test_runner_png_digit_round_trip(mnist_dir, tmp_path):
    tok = load_tokenizer("mnist")
    png = digit_png(tmp_path / "digit.png", 7)
    ort = OrtTokenizer(mnist_dir)
    ort.encode_file(png, tmp_path / "digit.npy")
    codec = Codec(tok)
    item = codec.open(png)
    assert np.array_equal(np.load(tmp_path / "digit.npy"), codec.encode([item])[0].numpy())
    assert json.loads((tmp_path / "digit.npy.json").read_text())["source"] == item.source
    ort.decode_file(tmp_path / "digit.npy", tmp_path / "ort.png")
    codec.write(tmp_path / "torch.png", codec.decode(read_codes(tmp_path / "digit.npy", tok).levels, item.source))
    a, b = (np.asarray(Image.open(tmp_path / n), np.int16) for n in ("ort.png", "torch.png"))
    assert a.shape == (28, 28) and np.abs(a - b).max() <= 1


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "LA"])
def test_png_reader_matches_pillow(tmp_path, mode):
    rng = np.random.default_rng(1)
    bands = {"L": 1, "RGB": 3, "RGBA": 4, "LA": 2}[mode]
    pixels = np.cumsum(rng.integers(0, 40, (19, 23, bands)), axis=1).astype(np.uint8)  # smooth rows: every filter
    Image.fromarray(pixels[..., 0] if bands == 1 else pixels, mode).save(tmp_path / "x.png")
    for channels in (1, 3):
        assert np.array_equal(ort_runner.image_input(tmp_path / "x.png", channels),
                              load_image(tmp_path / "x.png", None, channels=channels))
    ort_runner.atomic_write(tmp_path / "y.png", ort_runner.png_bytes(pixels[..., :1]))
    assert np.array_equal(np.asarray(Image.open(tmp_path / "y.png")), pixels[..., 0])


def test_numpy_speech_level_equals_the_library_one():
    rng = np.random.default_rng(0)
    for n, rate in ((100, 8000), (3199, 8000), (3200, 8000), (48000, 16000)):
        x = (rng.standard_normal(n) * np.linspace(0.001, 0.3, n)).astype(np.float32)
        assert ort_runner.level_db(x, rate) == speech_level.level_db(x, rate)
    speech = load_audio(SPEECH[1], 16000)[0]
    assert ort_runner.level_db(speech, 16000) == speech_level.level_db(speech, 16000)
    assert ort_runner.level_db(np.zeros(5000, np.float32), 8000) == -np.inf
    assert ort_runner.gain_to(-40.0, -24.0) == speech_level.gain_to(-40.0, -24.0) == 16.0
    assert ort_runner.gain_to(-90.0, -24.0) == 30.0


def test_runner_bad_input_is_one_clear_error_each(speech8k_dir, tmp_path):
    ort = OrtTokenizer(speech8k_dir)
    with pytest.raises(RunnerError, match="audio at 16000 Hz, but this tokenizer codes 8000 Hz"):
        ort.encode(np.zeros(100, np.float32), sample_rate=16000)
    with pytest.raises(RunnerError, match="dtype int16; pass float32"):
        ort.encode(np.zeros(100, np.int16))
    with pytest.raises(RunnerError, match="1 NaN or Inf"):
        ort.encode(np.array([0.0, np.nan], np.float32))
    with pytest.raises(RunnerError, match="ids 0..1024, outside the 1024-code codebook"):
        ort.decode([np.array([0, 1024])])
    with pytest.raises(RunnerError, match="dtype float64; codes are integers"):
        ort.decode([np.zeros(4)])
    sf.write(tmp_path / "nan.wav", np.array([0.1, np.nan] * 100, np.float32), 8000, subtype="FLOAT")
    with pytest.raises(RunnerError, match="nan.wav: 100 of 200 samples are NaN or Inf"):
        ort.encode_file(tmp_path / "nan.wav", tmp_path / "nan.npy")
    assert not (tmp_path / "nan.npy").exists()
    (tmp_path / "x.npy").write_bytes(b"")
    with pytest.raises(RunnerError, match="no such codes file with its sidecar"):
        ort.decode_file(tmp_path / "x.npy", tmp_path / "x.wav")
    with pytest.raises(RunnerError, match="no encoder.onnx and decoder.onnx"):
        OrtTokenizer(tmp_path)
    # the command line: one line on stderr, exit code 2
    proc = subprocess.run([sys.executable, str(RUNNER), "encode", str(speech8k_dir), str(tmp_path / "nan.wav"),
                           str(tmp_path / "nan.npy")], capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: ")


def test_the_runner_file_imports_no_torch():
    code = ("import importlib.util, sys; spec = importlib.util.spec_from_file_location('r', sys.argv[1]); "
            "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); "
            "print(sorted(n for n in sys.modules if n.split('.')[0] in ('torch', 'vqtok')))")
    out = subprocess.run([sys.executable, "-c", code, str(RUNNER)], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.slow
def test_runner_in_a_venv_without_torch(speech8k_dir, mnist_dir, tmp_path):
    """python -m venv, pip install numpy onnxruntime soundfile soxr, then the runner file on a speech/test file and a
    PNG digit; vqtok reads its token files and it decodes vqtok's. Skipped where pip cannot install."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    pip = subprocess.run([str(py), "-m", "pip", "install", "-q", "numpy", "onnxruntime", "soundfile", "soxr"],
                         capture_output=True, text=True)
    if pip.returncode != 0:
        pytest.skip(f"pip could not install the runner's packages: {pip.stderr.strip().splitlines()[-1:]}")
    assert subprocess.run([str(py), "-c", "import torch"], capture_output=True).returncode != 0
    run = shutil.copy(RUNNER, tmp_path / "ort_runner.py")  # outside the repository: nothing of vqtok beside it

    def runner(*args):
        proc = subprocess.run([str(py), str(run), *map(str, args)], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr

    png = digit_png(tmp_path / "digit.png", 3)
    runner("encode", speech8k_dir, SPEECH[2], tmp_path / "speech.npy")
    runner("encode", mnist_dir, png, tmp_path / "digit.npy")
    for name, model in (("speech.npy", "speech-8k"), ("digit.npy", "mnist")):
        assert read_codes(tmp_path / name, model).meta["tokenizer"]["name"] == model
    result = CliRunner().invoke(main, ["decode", str(tmp_path / "speech.npy"), "-o", str(tmp_path / "torch.wav")])
    assert result.exit_code == 0, result.output
    runner("decode", speech8k_dir, tmp_path / "speech.npy", tmp_path / "ort.wav")
    runner("decode", mnist_dir, tmp_path / "digit.npy", tmp_path / "digit_out.png")
    a, b = sf.read(tmp_path / "ort.wav")[0], sf.read(tmp_path / "torch.wav")[0]
    assert a.shape == b.shape and np.abs(a - b).max() <= 2 / 32768
    assert np.asarray(Image.open(tmp_path / "digit_out.png")).shape == (28, 28)


def stacked_model(path):
    """A small multi-codebook tokenizer (arch 'stacked', 3 residual stages), saved and loaded back."""
    from vqtok.tokenizer.quantizer import QuantizerConfig
    from vqtok.tokenizer.train_latent import stacked_tokenizer

    torch.manual_seed(0)
    net = LevelConfig(channels=[8, 16], strides=[2, 5], res_depth=1, code_dim=8, codebook_size=16,
                      encoder_stem="patch", dilation_growth=3)
    base = build_tokenizer(TokenizerConfig(dims=1, sample_rate=8000, net=net)).train()
    base(torch.sin(torch.arange(4000.0) * torch.tensor([0.03, 0.1, 0.3, 0.7])[:, None])[:, None] * 0.1)
    level = LevelConfig(channels=[16, 16], strides=[2, 2], res_depth=1, dilation_growth=3, code_dim=8, codebooks=3,
                        codebook_size=16, activation="elu")
    tok = stacked_tokenizer(base.eval(), level, QuantizerConfig(kmeans_iters=1)).train()
    tok(torch.randn(2, 1, 800) * 0.1)
    save_tokenizer(tok.eval(), path)
    return load_tokenizer(path)


def test_a_multi_codebook_tokenizer_exports_and_any_prefix_decodes(tmp_path):
    tok = stacked_model(tmp_path / "stacked.safetensors")
    export_onnx(tok, tmp_path / "onnx")
    ort = OrtTokenizer(tmp_path / "onnx")
    assert [o.shape for o in ort.encoder.get_outputs()] == [["batch", 3, "codes_time"]]
    assert [i.shape for i in ort.decoder.get_inputs()] == [["batch", "codebooks", "codes_time"]]
    x = (np.cumsum(np.random.default_rng(0).standard_normal(3000)) * 0.02).astype(np.float32)
    (codes,) = ort.encode(x)
    ref = tok.encode_long(x).numpy()
    assert codes.shape == ref.shape == (3, 75) and (codes == ref).mean() > 0.98
    for n in (1, 2, 3):
        y = ort.decode([ref[:n]], 3000, postfilter=False)
        with torch.no_grad():
            y_ref = tok.decode(torch.from_numpy(ref[:n]), size=3000)[0].numpy()
        assert np.abs(y - y_ref).max() < 1e-5 * np.abs(y_ref).max()
