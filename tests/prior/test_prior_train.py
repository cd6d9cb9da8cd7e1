"""Prior trainer: checkpoints and tokenizer refusal, the code cache, resume, `vqtok sample`, end to end."""

import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner
from PIL import Image

from testdata import SHARED_DATA
from vqtok import VqtokError, load_tokenizer, read_codes, save_tokenizer
from vqtok.cli import main
from vqtok.data.audio import AudioFolder
from vqtok.prior.checkpoint import load_prior, save_prior
from vqtok.prior.data import load_or_encode
from vqtok.prior.layout import MapLayout, SequenceLayout
from vqtok.prior.model import CodePrior
from vqtok.prior.recipe import load_prior_recipe
from vqtok.prior.train import evaluate_priors, train_prior
from vqtok.tokenizer.recipe import load_recipe
from vqtok.tokenizer import LevelConfig, TokenizerConfig, build_tokenizer
from vqtok.tokenizer.codes import tokenizer_summary
from vqtok.tokenizer.train import train_tokenizer

REPO = Path(__file__).resolve().parents[2]
MNIST = SHARED_DATA / "mnist"


def tiny_tokenizer(path: Path, dims: int = 2, seed: int = 0, arch: str = "vqvae", level_db=None) -> Path:
    """An untrained tokenizer with an initialised codebook, saved (so it has a fingerprint)."""
    torch.manual_seed(seed)
    strides = [4, 5] if dims == 1 else [2, 2]
    cfg = TokenizerConfig(
        arch=arch, dims=dims, sample_rate=8000 if dims == 1 else None,
        net=LevelConfig(channels=[8, 8] if arch == "vqvae" else [8], strides=strides if arch == "vqvae" else [2],
                        res_depth=1, code_dim=8,
                        codebook_size=16),
        top=LevelConfig(channels=[8], strides=[2], res_depth=1, code_dim=8, codebook_size=8) if arch == "vqvae2" else None,
        level_db=level_db,
    )
    tok = build_tokenizer(cfg)
    x = torch.cumsum(torch.randn(4, 1, 4000), -1) * 0.05 if dims == 1 else torch.rand(8, 1, 28, 28)
    tok.train()(x)  # k-means initialisation of the codebook
    path.parent.mkdir(parents=True, exist_ok=True)
    save_tokenizer(tok.eval(), path)
    return path


def assert_png(path: Path) -> None:
    """A real, non-empty PNG image."""
    from PIL import Image

    with Image.open(path) as img:
        assert img.format == "PNG" and min(img.size) > 50


def spoken_digits(root: Path, digits: int = 3, takes=(0, 6, 7, 8)) -> Path:
    """FSDD-named clips of 0.1-0.3 s: takes 0-4 form the test split, the rest the training split."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for d in range(digits):
        for take in takes:
            n = int(rng.integers(800, 2400))
            t = np.arange(n) / 8000
            wav = 0.3 * np.sin(2 * np.pi * (300 + 150 * d) * t) * np.hanning(n)
            sf.write(root / f"{d}_spk_{take}.wav", wav.astype(np.float32), 8000)
    return root


def prior_recipe(tokenizer: Path, *items: str, audio_root: Path | None = None):
    """recipes/mnist_prior.yaml (or speech_prior.yaml for audio) shrunk to seconds."""
    if audio_root is None:
        base = ["data.root=" + str(MNIST), "data.max_items=48", "data.valid_items=16",
                "model.config={channels: 8, layers: 2, kernel_size: 3}"]
        path = REPO / "recipes" / "mnist_prior.yaml"
    else:
        base = ["data.root=" + str(audio_root), "model.config={dim: 16, layers: 1, heads: 2, max_len: 128}",
                "data.shifts=0"]
        path = REPO / "recipes" / "speech_prior.yaml"
    base += [f"tokenizer={tokenizer}", "train.max_steps=4", "train.batch_size=8", "train.warmup_steps=1",
             "train.log_every=2", "train.valid_every=4", "train.save_every=4", "samples=4"]
    return load_prior_recipe(path, base + list(items))


# ------------------------------------------------------------------------ recipes
def test_recipe_model_config_is_strict():
    path = REPO / "recipes" / "mnist_prior.yaml"
    with pytest.raises(VqtokError, match=r"mnist_prior.yaml: unknown key 'model.config.chanels'.*channels"):
        load_prior_recipe(path, ["model.config.chanels=3"])
    with pytest.raises(VqtokError, match="num_codes is set by the tokenizer"):
        load_prior_recipe(path, ["model.config.num_codes=3"])
    with pytest.raises(VqtokError, match="unknown model.network 'lstm'; choose one of pixelcnn, transformer"):
        load_prior_recipe(path, ["model.network=lstm"])
    with pytest.raises(VqtokError, match="unknown level 'middle'"):
        load_prior_recipe(path, ["level=middle"])


# -------------------------------------------------------------------- checkpoints
def test_prior_checkpoint_round_trip_and_refusal_of_another_tokenizer(tmp_path):
    tok = load_tokenizer(tiny_tokenizer(tmp_path / "a.safetensors", seed=0))
    other = load_tokenizer(tiny_tokenizer(tmp_path / "b.safetensors", seed=1))
    assert tok.fingerprint != other.fingerprint
    layout = MapLayout(network="pixelcnn", level="codes", level_index=0, codebook_size=16, shape=[7, 7],
                       num_classes=3, class_counts=[5, 3, 2])
    prior = CodePrior(layout, {"channels": 8, "layers": 2, "kernel_size": 3})
    save_prior(prior, tmp_path / "prior.safetensors", tokenizer_summary(tok), {"step": 7})
    loaded = load_prior(tmp_path / "prior.safetensors", tokenizer=tok)
    assert loaded.layout == layout and loaded.train_info == {"step": 7}
    assert loaded.tokenizer["fingerprint"] == tok.fingerprint
    for name, value in prior.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name
    codes, labels = torch.randint(0, 16, (2, 7, 7)), torch.tensor([0, 2])
    with torch.no_grad():
        assert torch.equal(loaded.logits(codes, labels, None), prior.eval().logits(codes, labels, None))
    with pytest.raises(VqtokError) as err:
        load_prior(tmp_path / "prior.safetensors", tokenizer=other)
    message = str(err.value)
    assert tok.fingerprint in message and other.fingerprint in message and "prior.safetensors" in message
    with pytest.raises(VqtokError, match="not a vqtok prior checkpoint.*that is a tokenizer"):
        load_prior(tmp_path / "a.safetensors")


def test_transformer_prior_with_class_bias_round_trips(tmp_path):
    tok = load_tokenizer(tiny_tokenizer(tmp_path / "a.safetensors", dims=1))
    layout = SequenceLayout(network="transformer", level="codes", level_index=0, codebook_size=16, eos=True,
                            num_classes=3, class_counts=[1, 1, 1], max_length=20)
    prior = CodePrior(layout, {"dim": 16, "layers": 1, "heads": 2, "max_len": 24, "class_bias": True})
    save_prior(prior, tmp_path / "prior.safetensors", tokenizer_summary(tok), {})
    loaded = load_prior(tmp_path / "prior.safetensors", tokenizer=tok)
    assert loaded.net.config.class_bias and "net.class_bias.weight" in loaded.state_dict()
    codes, labels = torch.randint(0, 16, (2, 20)), torch.tensor([0, 2])
    with torch.no_grad():
        assert torch.equal(loaded.logits(codes, labels, None), prior.eval().logits(codes, labels, None))


def test_sequence_targets_end_with_eos_and_uniform_logits_give_log2_k(tmp_path):
    layout = SequenceLayout(network="transformer", level="codes", level_index=0, codebook_size=5, eos=True)
    prior = CodePrior(layout, {"dim": 8, "layers": 1, "heads": 2, "max_len": 8})
    assert prior.net.config.num_codes == 8  # K + PAD, BOS, EOS
    codes = torch.tensor([[1, 2, 3, 0], [4, 0, 0, 0]])
    tokens, mask = prior.targets(codes, torch.tensor([3, 1]))
    assert tokens.tolist() == [[1, 2, 3, 7, 5], [4, 7, 5, 5, 5]]  # EOS = 7 at each length, PAD = 5 after
    assert mask.tolist() == [[True] * 4 + [False], [True, True, False, False, False]]
    torch.nn.init.zeros_(prior.net.head.weight)
    torch.nn.init.zeros_(prior.net.head.bias)  # uniform over 8 outputs: ln 8 nats per target
    with torch.no_grad():
        nll, count, eos = prior.nll(codes, None, None, torch.tensor([3, 1]))
    assert int(count) == 6 and float(nll) == pytest.approx(6 * math.log(8), rel=1e-5)
    assert float(eos) == pytest.approx(2 * math.log(8), rel=1e-5)


# --------------------------------------------------------------------------- cache
def test_code_cache_is_reused_and_invalidated_by_another_tokenizer(tmp_path, monkeypatch):
    recipe = prior_recipe(tmp_path / "a.safetensors")
    tok = load_tokenizer(tiny_tokenizer(tmp_path / "a.safetensors", seed=0))
    first, reused = load_or_encode(tok, recipe.data, "train", tmp_path / "cache")
    assert not reused and len(first) == 48 and first.levels[0].shape == (48, 7, 7)
    assert first.labels.tolist() == _mnist_labels(48)
    stamp = (tmp_path / "cache" / "train.pt").stat().st_mtime_ns

    def no_encoding(*args, **kwargs):
        raise AssertionError("encoded again although the cache was valid")

    with monkeypatch.context() as patch:
        patch.setattr("vqtok.prior.data.encode_dataset", no_encoding)
        again, reused = load_or_encode(tok, recipe.data, "train", tmp_path / "cache")
    assert reused and torch.equal(again.levels[0], first.levels[0]) and torch.equal(again.labels, first.labels)
    assert (tmp_path / "cache" / "train.pt").stat().st_mtime_ns == stamp
    other = load_tokenizer(tiny_tokenizer(tmp_path / "b.safetensors", seed=1))
    fresh, reused = load_or_encode(other, recipe.data, "train", tmp_path / "cache")
    assert not reused and not torch.equal(fresh.levels[0], first.levels[0])
    expected = other.encode(torch.stack([torch.from_numpy(x) for x in _mnist_images(48)]).float()[:, None] / 255)
    assert torch.equal(fresh.levels[0].long(), expected)
    recipe.data.max_items = 40  # other data: encoded again too
    assert not load_or_encode(other, recipe.data, "train", tmp_path / "cache")[1]


def _mnist_images(n):
    from vqtok.data.mnist import load_mnist

    return load_mnist(MNIST, "train")[0][:n]


def _mnist_labels(n):
    from vqtok.data.mnist import load_mnist

    return load_mnist(MNIST, "train")[1][:n].tolist()


# -------------------------------------------------------------------- resume, refusal
def test_resume_gives_the_same_final_weights_and_refuses_another_tokenizer(tmp_path):
    tiny_tokenizer(tmp_path / "a.safetensors", seed=0)
    recipe = prior_recipe(tmp_path / "a.safetensors", "train.max_steps=6", "samples=0",
                          f"data.cache={tmp_path / 'codes'}")  # encoded once, reused by the three runs
    straight = train_prior(recipe, tmp_path / "straight", progress=False, plot=False)["codes"]
    train_prior(recipe, tmp_path / "cut", stop_after=2, progress=False, plot=False)
    assert load_prior(tmp_path / "cut" / "prior.safetensors").train_info["step"] == 2
    again = load_prior_recipe(tmp_path / "cut" / "recipe.yaml")
    resumed = train_prior(again, tmp_path / "cut", resume=True, progress=False, plot=False)["codes"]
    for name, value in straight.state_dict().items():
        assert torch.equal(resumed.state_dict()[name], value), name
    tiny_tokenizer(tmp_path / "b.safetensors", seed=1)
    other = load_prior_recipe(tmp_path / "cut" / "recipe.yaml", [f"tokenizer={tmp_path / 'b.safetensors'}"])
    with pytest.raises(VqtokError, match="this run models tokenizer .* is tokenizer"):
        train_prior(other, tmp_path / "cut", resume=True, progress=False, plot=False)


# ----------------------------------------------------------------------------- CLI
def test_vqtok_sample_writes_wavs_of_natural_lengths_and_codes(tmp_path):
    root = spoken_digits(tmp_path / "fsdd")
    tok_path = tiny_tokenizer(tmp_path / "tok.safetensors", dims=1)
    recipe = prior_recipe(tok_path, audio_root=root)
    priors = train_prior(recipe, tmp_path / "run", progress=False, plot=False)
    layout = priors["codes"].layout
    assert layout.eos and layout.num_classes == 3 and layout.class_counts == [3, 3, 3]
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    valid = [r for r in rows if r["split"] == "valid"][-1]
    assert {"nll", "bits_per_code", "bits_per_second"} <= set(valid)
    assert valid["bits_per_code"] == pytest.approx(valid["nll"] / math.log(2))
    result = CliRunner().invoke(main, ["sample", str(tmp_path / "run"), "-n", "3", "--label", "2", "-o",
                                       str(tmp_path / "wavs"), "--codes", str(tmp_path / "codes")],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    wavs = sorted((tmp_path / "wavs").glob("*.wav"))
    assert [w.name for w in wavs] == ["sample_000.wav", "sample_001.wav", "sample_002.wav"]
    assert_png(tmp_path / "wavs" / "spectrograms.png")
    assert_png(tmp_path / "run" / "samples" / "step0000004.png")  # validation samples, pictured
    tok = load_tokenizer(tok_path)
    for wav in wavs:
        audio, rate = sf.read(wav)
        codes = read_codes(tmp_path / "codes" / wav.with_suffix(".npy").name, tok)
        assert rate == 8000 and len(audio) == 20 * len(codes.levels[0]) and codes.label == 2
        assert 1 <= len(codes.levels[0]) <= layout.max_length
    # Another tokenizer is refused, naming both fingerprints
    other = tiny_tokenizer(tmp_path / "other.safetensors", dims=1, seed=5)
    result = CliRunner().invoke(main, ["sample", str(tmp_path / "run"), "-m", str(other), "-o", str(tmp_path / "x")])
    assert result.exit_code == 2 and load_tokenizer(other).fingerprint in result.output
    assert tok.fingerprint in result.output and not (tmp_path / "x").exists()


def test_end_to_end_debug_tokenizer_prior_sample_decode(tmp_path):
    """recipes/debug.yaml tokenizer -> encode MNIST -> tiny class-conditional prior -> vqtok sample -> decode."""
    tok_recipe = load_recipe(REPO / "recipes" / "debug.yaml", [
        f"data.root={MNIST}", "train.max_steps=3", "train.log_every=3", "train.valid_every=3", "train.save_every=3",
        "data.valid_items=8", "train.threads=1"])
    train_tokenizer(tok_recipe, tmp_path / "tok", progress=False)
    recipe = prior_recipe(tmp_path / "tok")
    priors = train_prior(recipe, tmp_path / "prior", progress=False)
    run = tmp_path / "prior"
    assert {p.name for p in run.iterdir()} >= {"prior.safetensors", "tokenizer.safetensors", "state.pt",
                                              "recipe.yaml", "metrics.jsonl", "curves.png", "codes", "samples"}
    tok = load_tokenizer(run / "tokenizer.safetensors")
    assert tok.fingerprint == load_tokenizer(tmp_path / "tok" / "tokenizer.safetensors").fingerprint
    valid = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()][-1]
    assert valid["split"] == "valid" and valid["bits_per_image"] == pytest.approx(49 * valid["bits_per_code"])
    assert valid["nll"] < math.log(tok.codebook_size[0]) + 0.5  # near uniform after 4 steps, not wildly off
    assert (run / "samples" / "step0000004.png").is_file()
    result = CliRunner().invoke(main, ["sample", str(run), "-n", "6", "--label", "3", "-o", str(tmp_path / "s.png"),
                                       "--codes", str(tmp_path / "codes")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert Image.open(tmp_path / "s.png").size == (6 * 30 + 2, 30 + 2)  # 6 images of 28 px, 2 px borders
    result = CliRunner().invoke(main, ["decode", str(tmp_path / "codes" / "sample_000.npy"), "-m",
                                       str(run / "tokenizer.safetensors"), "-o", str(tmp_path / "one.png")],
                                catch_exceptions=False)
    assert result.exit_code == 0 and Image.open(tmp_path / "one.png").size == (28, 28)
    codes = read_codes(tmp_path / "codes" / "sample_000.npy", tok)
    assert codes.levels[0].shape == (7, 7) and codes.label == 3
    metrics = evaluate_priors(priors, _codes_of(run), tok, torch.device("cpu"))
    assert metrics["nll"] == pytest.approx(valid["nll"], rel=1e-5)


def _codes_of(run: Path):
    from vqtok.prior.data import CodeSet

    stored = torch.load(run / "codes" / "test.pt", weights_only=True)
    return CodeSet(stored["levels"], stored["lengths"], stored["labels"], stored["sizes"], int(stored["dims"]))


def test_vqvae2_top_and_bottom_priors_train_and_sample_top_first(tmp_path):
    tok_path = tiny_tokenizer(tmp_path / "tok.safetensors", arch="vqvae2")
    recipe = load_prior_recipe(REPO / "recipes" / "mnist_vqvae2_prior.yaml", [
        f"tokenizer={tok_path}", f"data.root={MNIST}", "data.max_items=32", "data.valid_items=8",
        "model.config={channels: 8, layers: 2, kernel_size: 3, cond_channels: 4, cond_layers: 1}",
        "train.max_steps=2", "train.batch_size=8", "train.warmup_steps=1", "train.log_every=2",
        "train.valid_every=2", "train.save_every=2", "samples=2"])
    priors = train_prior(recipe, tmp_path / "run", progress=False, plot=False)
    assert list(priors) == ["top", "bottom"]
    assert priors["top"].layout.shape == [7, 7] and priors["bottom"].layout.shape == [14, 14]
    assert priors["bottom"].layout.cond_codebook_size == 8 and priors["top"].layout.cond_codebook_size is None
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    valid = rows[-1]
    assert valid["bits_per_image"] == pytest.approx(49 * valid["bits_per_code_top"] + 196 * valid["bits_per_code_bottom"])
    result = CliRunner().invoke(main, ["sample", str(tmp_path / "run" / "prior_bottom.safetensors"), "-n", "2",
                                       "-o", str(tmp_path / "out"), "--codes", str(tmp_path / "codes")],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "samples.png").is_file()
    codes = read_codes(tmp_path / "codes" / "sample_000.npz", load_tokenizer(tok_path))
    assert [c.shape for c in codes.levels] == [(7, 7), (14, 14)]
    (tmp_path / "run" / "prior_top.safetensors").unlink()
    result = CliRunner().invoke(main, ["sample", str(tmp_path / "run"), "-o", str(tmp_path / "x.png")])
    assert result.exit_code == 2 and "prior_top.safetensors is missing" in result.output


def test_shifted_copies_extend_the_training_codes_only(tmp_path):
    from vqtok.data.images import shift_image
    from vqtok.prior.data import encode_dataset

    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    assert shift_image(x, 1, -1)[0, 0].tolist() == [[0, 0, 0, 0], [1, 2, 3, 0], [5, 6, 7, 0], [9, 10, 11, 0]]
    tok = load_tokenizer(tiny_tokenizer(tmp_path / "a.safetensors"))
    recipe = prior_recipe(tmp_path / "a.safetensors", "data.max_items=8", "data.shifts=1")
    train = encode_dataset(tok, recipe.data, "train")
    plain = encode_dataset(tok, prior_recipe(tmp_path / "a.safetensors", "data.max_items=8").data, "train")
    assert len(train) == 9 * 8 and torch.equal(train.levels[0][:8], plain.levels[0])
    assert train.labels.tolist() == plain.labels.tolist() * 9
    assert len(encode_dataset(tok, recipe.data, "test")) == 16  # validation stays the real test images


def test_delayed_copies_of_training_clips(tmp_path):
    from vqtok.data.audio import AudioFolder
    from vqtok.modality import Audio
    from vqtok.prior.data import encode_dataset

    root = spoken_digits(tmp_path / "fsdd")
    tok = load_tokenizer(tiny_tokenizer(tmp_path / "tok.safetensors", dims=1))  # hop 20 samples
    recipe = prior_recipe(tmp_path / "tok.safetensors", "data.shifts=3", audio_root=root)
    assert Audio().prior_shifts(recipe.data, "train", tok) == [0, 5, 10, 15]
    assert Audio().prior_shifts(recipe.data, "test", tok) == [0]
    plain = encode_dataset(tok, prior_recipe(tmp_path / "tok.safetensors", audio_root=root).data, "train")
    train = encode_dataset(tok, recipe.data, "train")
    n = len(plain)
    assert len(train) == 4 * n and train.labels.tolist() == plain.labels.tolist() * 4
    width = plain.levels[0].shape[1]  # the delayed copies can be a code longer: more padding after
    assert torch.equal(train.levels[0][:n, :width], plain.levels[0]) and not train.levels[0][:n, width:].any()
    assert torch.equal(train.lengths[0][:n], plain.lengths[0])
    clips = AudioFolder(root, 8000, None, "train", "fsdd", random_crop=False)
    for k, delay in enumerate([5, 10, 15], start=1):  # copy k: the clip with `delay` zeros in front
        for i in range(n):
            clip = np.concatenate([np.zeros(delay, np.float32), clips.clip(i)])
            got = train.levels[0][k * n + i, : train.lengths[0][k * n + i]]
            assert torch.equal(got.long(), tok.encode_long(clip).long())
            assert train.sizes[k * n + i] == len(clip)
    assert len(encode_dataset(tok, recipe.data, "test")) == len(
        encode_dataset(tok, prior_recipe(tmp_path / "tok.safetensors", audio_root=root).data, "test"))


def test_prior_trains_on_a_folder_vqtok_encode_wrote(tmp_path):
    """vqtok encode FOLDER -o codes/ -> a prior recipe with data.kind codes -> train -> vqtok sample."""
    root = spoken_digits(tmp_path / "fsdd")
    tok_path = tiny_tokenizer(tmp_path / "tok.safetensors", dims=1)
    result = CliRunner().invoke(main, ["encode", str(root), "-m", str(tok_path), "-o", str(tmp_path / "codes"),
                                       "--labels", "fsdd"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    manifest = tmp_path / "codes" / "manifest.jsonl"
    recipe = prior_recipe(tok_path, "data.kind=codes", f"data.root={manifest}", "data.rule=fsdd",
                          f"data.cache={tmp_path / 'unused'}", audio_root=root)
    tok = load_tokenizer(tok_path)
    # The same codes, labels and lengths as encoding the audio folder itself
    for split in ("train", "test"):
        from_codes, _ = load_or_encode(tok, recipe.data, split, tmp_path / "unused")
        audio = copy.deepcopy(recipe.data)
        audio.kind, audio.root = "audio", str(root)
        from_audio, _ = load_or_encode(tok, audio, split, tmp_path / "cache")
        def items(s):
            return sorted((int(s.labels[i]), int(s.sizes[i]), tuple(s.levels[0][i, : s.lengths[0][i]].tolist()))
                          for i in range(len(s)))
        assert len(from_codes) == (9 if split == "train" else 3) and items(from_codes) == items(from_audio)
    priors = train_prior(recipe, tmp_path / "run", progress=False, plot=False)
    assert priors["codes"].layout.class_counts == [3, 3, 3] and not (tmp_path / "unused").exists()
    result = CliRunner().invoke(main, ["sample", str(tmp_path / "run"), "-n", "2", "--label", "1", "-o",
                                       str(tmp_path / "wavs")], catch_exceptions=False)
    assert result.exit_code == 0 and len(list((tmp_path / "wavs").glob("*.wav"))) == 2
    # Codes from another tokenizer are refused, naming both
    other = tiny_tokenizer(tmp_path / "other.safetensors", dims=1, seed=5)
    with pytest.raises(VqtokError, match="encoded by .*but this prior models"):
        train_prior(prior_recipe(other, "data.kind=codes", f"data.root={manifest}", "data.rule=fsdd",
                                 audio_root=root), tmp_path / "run2", progress=False, plot=False)


def test_a_prior_encodes_its_audio_at_the_tokenizers_level_as_vqtok_encode_does(tmp_path):
    root = spoken_digits(tmp_path / "fsdd")
    tok_path = tiny_tokenizer(tmp_path / "tok.safetensors", dims=1, level_db=-6.0)  # ~12 dB louder: other codes
    result = CliRunner().invoke(main, ["encode", str(root), "-m", str(tok_path), "-o", str(tmp_path / "codes"),
                                       "--labels", "fsdd", "--quiet"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    tok = load_tokenizer(tok_path)
    codes = {}
    for line in (tmp_path / "codes" / "manifest.jsonl").read_text().splitlines():
        entry = json.loads(line)
        codes[Path(entry["path"]).name] = read_codes(tmp_path / "codes" / entry["codes"], tok)
    assert all(abs(c.source["gain_db"]) > 1 for c in codes.values())  # the clips were scaled
    recipe = prior_recipe(tok_path, audio_root=root)
    from_audio, _ = load_or_encode(tok, recipe.data, "train", tmp_path / "cache")
    clips = AudioFolder(root, 8000, None, "train", "fsdd", random_crop=False)
    changed = 0
    for i, path in enumerate(clips.files):
        got = from_audio.levels[0][i, : from_audio.lengths[0][i]].long()
        assert torch.equal(got, torch.from_numpy(codes[Path(path).name].levels[0]).long())
        changed += not torch.equal(got, tok.encode_long(clips.clip(i)).long())
    assert changed  # the clips as they are make other codes


def test_vqtok_train_refuses_init_from_for_a_prior_recipe(tmp_path):
    result = CliRunner().invoke(main, ["train", str(REPO / "recipes" / "mnist_prior.yaml"), "--init-from",
                                       str(tmp_path / "x.safetensors"), "--out", str(tmp_path / "run")])
    assert result.exit_code == 2 and "--init-from" in result.output and "prior recipe" in result.output
    assert not (tmp_path / "run").exists()
