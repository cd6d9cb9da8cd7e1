"""A Transformer prior over residual codebooks (Q, T) read frame by frame, in windows longer files need."""

import json
import math

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from test_prior_train import REPO, load_prior_recipe, spoken_digits

from vqtok import load_tokenizer, read_codes
from vqtok.cli import main
from vqtok.prior import coding
from vqtok.prior.layout import SequenceLayout, random_windows
from vqtok.prior.model import CodePrior
from vqtok.prior.sampling import TransformerSteps
from vqtok.prior.train import train_prior
from vqtok.prior.transformer import CausalTransformer
from vqtok.tokenizer.base import LevelConfig, TokenizerConfig
from vqtok.tokenizer.checkpoint import build_tokenizer, save_tokenizer
from vqtok.tokenizer.quantizer import QuantizerConfig
from vqtok.tokenizer.train_latent import stacked_tokenizer


def test_each_codebook_has_its_own_input_embedding_and_output_head():
    k, q = 5, 3
    net = CausalTransformer(k, dim=8, layers=1, heads=2, max_len=16, codebooks=q)
    with torch.no_grad():
        net.head.weight.zero_()
        net.head.bias.copy_(torch.tensor([10.0 * b + j for b in range(q) for j in range(k)]))
        net.tok_emb.weight.copy_(torch.arange(k * q, dtype=torch.float)[:, None].expand(-1, 8))
        codes = torch.tensor([[4, 0, 2, 1, 3, 4, 0]])
        # position t predicts code t, of codebook t % Q: its head's logits are 10 * (t % 3) + j
        expected = torch.tensor([[10.0 * (t % q) + j for j in range(k)] for t in range(7)])
        assert torch.equal(net(codes)[0], expected)
        cache = net.new_cache(1, 8)
        steps = [net.step(None, cache)] + [net.step(codes[:, t], cache) for t in range(6)]
        assert torch.equal(torch.cat(steps), expected)
        # code i of a sequence starting at code `first` is embedded as row code + K * ((first + i) % Q)
        assert net._embed(codes, 0)[0, :, 0].tolist() == [4, 5, 12, 1, 8, 14, 0]
        assert net._embed(codes[:, 1:], 1)[0, :, 0].tolist() == [5, 12, 1, 8, 14, 0]


def test_windows_cover_every_code_once_with_their_context():
    lay = SequenceLayout(network="transformer", level="codes", level_index=0, codebook_size=8, codebooks=2,
                         window=10, context=4)
    assert lay.windows(7) == [(0, 0, 7)]
    assert lay.windows(10) == [(0, 0, 10)]
    assert lay.windows(23) == [(0, 0, 10), (6, 10, 16), (12, 16, 22), (18, 22, 23)]
    codes = torch.arange(12).reshape(2, 6)  # (Q, T)
    assert lay.flatten(codes).tolist() == [0, 6, 1, 7, 2, 8, 3, 9, 4, 10, 5, 11]
    assert torch.equal(lay.unflatten(lay.flatten(codes)), codes)


def test_windowed_nll_equals_the_cached_and_uncached_steps_that_code_a_file():
    torch.manual_seed(0)
    lay = SequenceLayout(network="transformer", level="codes", level_index=0, codebook_size=16, codebooks=4,
                         window=32, context=16)
    prior = CodePrior(lay, {"dim": 32, "layers": 2, "heads": 4, "max_len": 32}).eval()
    codes, lengths = torch.randint(0, 16, (2, 100)), torch.tensor([100, 60])
    with torch.no_grad():
        nll, count, _ = prior.windowed_nll(codes, lengths, batch_size=3)
        assert int(count) == 160
        for use_cache in (True, False):
            total = 0.0
            for i, n in enumerate(lengths.tolist()):
                steps = TransformerSteps(prior.net, 1, n, use_cache=use_cache, context=16)
                for t in range(n):
                    total += float(F.cross_entropy(steps.next_logits(), codes[i : i + 1, t]))
                    steps.push(codes[i : i + 1, t])
            assert total == pytest.approx(float(nll), rel=1e-5)


def test_random_windows_start_on_frames_inside_each_item():
    torch.manual_seed(0)
    codes = torch.arange(40).repeat(50, 1)  # (50, 40), item i holds lengths[i] codes
    lengths = torch.tensor([40, 12, 9] * 16 + [40, 40])
    out, n = random_windows(codes, lengths, window=12, align=4)
    starts = out[:, 0]
    assert torch.equal(out, starts[:, None] + torch.arange(12))  # contiguous
    assert (starts % 4 == 0).all() and (starts <= (lengths - 12).clamp_min(0)).all()
    assert torch.equal(n, (lengths - starts).clamp_max(12))
    assert len(set(starts[lengths == 40].tolist())) > 3  # not always the same cut


def stacked(path):
    torch.manual_seed(0)
    net = LevelConfig(channels=[8, 16], strides=[2, 5], res_depth=1, code_dim=8, codebook_size=16,
                      encoder_stem="patch", dilation_growth=3)
    base = build_tokenizer(TokenizerConfig(dims=1, sample_rate=8000, net=net)).train()
    t = torch.arange(4000.0)
    base(torch.stack([torch.sin(t * f) for f in (0.03, 0.1, 0.3, 0.7)])[:, None] * 0.1)
    level = LevelConfig(channels=[16], strides=[4], res_depth=1, code_dim=8, codebooks=3, codebook_size=16,
                        quantizer_dropout=0.5, activation="elu")
    tok = stacked_tokenizer(base.eval(), level, QuantizerConfig(kmeans_iters=1)).train()
    tok(torch.stack([torch.sin(t * f) for f in (0.05, 0.2)])[:, None] * 0.3)
    save_tokenizer(tok.eval(), path)
    return path


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("lm")
    data = spoken_digits(root / "clips", takes=(0, 1, 6, 7, 8))
    tok_path = stacked(root / "tok.safetensors")
    recipe = load_prior_recipe(REPO / "recipes" / "speech_lm_prior.yaml", [
        f"tokenizer={tok_path}", f"data.root={data}", "data.rule=fsdd", "model.context=12",
        "model.config={dim: 16, layers: 1, heads: 2, max_len: 30}", "train.max_steps=6", "train.batch_size=4",
        "train.warmup_steps=1", "train.lr=0.01", "train.valid_every=6", "train.save_every=6", "samples=2"])
    priors = train_prior(recipe, root / "run", progress=False, plot=False)
    result = CliRunner().invoke(main, ["encode", str(data), "-m", str(tok_path), "-o", str(root / "codes"),
                                       "--quiet"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return root, priors["codes"], tok_path


def test_a_residual_prior_trains_on_windows_and_is_scored_on_whole_files(lm_run):
    root, prior, tok_path = lm_run
    lay = prior.layout
    assert (lay.codebooks, lay.window, lay.context, lay.eos) == (3, 30, 12, False)
    assert lay.max_length > 30  # the clips are longer than one window
    samples = sorted((root / "run" / "samples").glob("*.wav"))
    assert len(samples) == 2 and len(sf.read(samples[0])[0]) == 30 // 3 * 40  # one window: 10 frames of 40


def test_compress_codes_residual_token_files_at_the_windowed_nll(lm_run, tmp_path):
    root, prior, tok_path = lm_run
    files = sorted((root / "codes").glob("*.npy"))
    packed = tmp_path / "all.vqz"
    for args in (["compress", str(root / "codes"), "-p", str(root / "run"), "-o", str(packed)],
                 ["decompress", str(packed), "-o", str(tmp_path / "back")]):
        result = CliRunner().invoke(main, args, catch_exceptions=False)
        assert result.exit_code == 0, result.output
    nll_bits = 0.0
    for path in files:
        original = read_codes(path)
        assert original.levels[0].shape[0] == 3 and original.levels[0].shape[1] * 3 > 30
        assert np.array_equal(read_codes(tmp_path / "back" / path.name).levels[0], original.levels[0])
        seq = prior.layout.flatten(torch.from_numpy(original.levels[0]).long())
        with torch.no_grad():
            nll_bits += float(prior.windowed_nll(seq[None], torch.tensor([len(seq)]))[0]) / math.log(2)
    payload = 8 * coding.read_vqz(packed).header.payload_bytes
    # one message: the NLL plus < 1% (table quantisation) and its end
    assert nll_bits - 8 <= payload <= nll_bits * 1.01 + 16


def test_vqtok_sample_draws_residual_codes_of_whole_frames(lm_run, tmp_path):
    root, prior, tok_path = lm_run
    result = CliRunner().invoke(main, ["sample", str(root / "run"), "-n", "2", "-o", str(tmp_path / "wavs"),
                                       "--codes", str(tmp_path / "codes")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    tok = load_tokenizer(tok_path)
    for path in sorted((tmp_path / "codes").glob("*.npy")):
        codes = read_codes(path, tok).levels[0]
        assert codes.shape == (3, 10) and codes.max() < 16
        audio, rate = sf.read(tmp_path / "wavs" / path.with_suffix(".wav").name)
        assert rate == 8000 and len(audio) == 400
    # --seconds: 0.3 s at 8 kHz is 60 frames of 40 samples, 180 codes, read in windows of 30
    result = CliRunner().invoke(main, ["sample", str(root / "run"), "-n", "1", "--seconds", "0.3", "-o",
                                       str(tmp_path / "long"), "--codes", str(tmp_path / "long_codes")])
    assert result.exit_code == 0, result.output
    assert read_codes(tmp_path / "long_codes" / "sample_000.npy", tok).levels[0].shape == (3, 60)
    assert len(sf.read(tmp_path / "long" / "sample_000.wav")[0]) == 2400


def test_samples_without_windows_fit_one_pass_in_whole_frames():
    torch.manual_seed(0)
    lay = SequenceLayout(network="transformer", level="codes", level_index=0, codebook_size=16, codebooks=4,
                         max_length=500)
    prior = CodePrior(lay, {"dim": 16, "layers": 1, "heads": 2, "max_len": 30}).eval()
    assert [tuple(s.shape) for s in prior.sample(2)] == [(4, 7), (4, 7)]  # 30 positions: 7 frames of 4
    assert [tuple(s.shape) for s in prior.sample(1, max_length=12)] == [(4, 3)]


def test_vqtok_info_describes_a_prior_file(lm_run):
    root, prior, tok_path = lm_run
    path = root / "run" / "prior.safetensors"
    text = CliRunner().invoke(main, ["info", str(path)], catch_exceptions=False).output
    assert "network       transformer (dim 16, layers 1, heads 2, max_len 30), " in text
    assert f"{sum(p.numel() for p in prior.parameters()):,} parameters" in text
    assert "reads         sequences, frame by frame over 3 codebooks; in windows of 30 codes re-reading 12" in text
    assert f"of tokenizer {load_tokenizer(tok_path).fingerprint}" in text and "recipe speech_lm_prior, step 6" in text
    card = json.loads(CliRunner().invoke(main, ["info", str(path), "--json"]).output)
    assert (card["codebooks"], card["window"], card["context"], card["eos"]) == (3, 30, 12, False)


def test_compress_refuses_a_prefix_of_the_codebooks(lm_run, tmp_path):
    root, prior, tok_path = lm_run
    clip = sorted((root / "clips").glob("*.wav"))[0]
    result = CliRunner().invoke(main, ["encode", str(clip), "-m", str(tok_path), "--codebooks", "2", "-o",
                                       str(tmp_path / "two.npy"), "--quiet"])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(main, ["compress", str(tmp_path / "two.npy"), "-p", str(root / "run"), "-o",
                                       str(tmp_path / "two.vqz")])
    assert result.exit_code == 2 and not (tmp_path / "two.vqz").exists()
    assert "two.npy: 2 codebooks, but the prior models all 3 codebooks of each frame" in result.output
    item = coding.CodedItem([read_codes(tmp_path / "two.npy").levels[0]], None, None, {})
    with pytest.raises(coding.VqtokError, match="a token file: 2 codebooks"):  # the library refuses it too
        coding.compress_many([prior], "0123456789abcdef", [item])


def test_a_prior_refuses_to_train_on_files_of_fewer_codebooks(lm_run, tmp_path):
    root, prior, tok_path = lm_run
    result = CliRunner().invoke(main, ["encode", str(root / "clips"), "-m", str(tok_path), "--codebooks", "2",
                                       "-o", str(tmp_path / "two"), "--quiet"])
    assert result.exit_code == 0, result.output
    recipe = load_prior_recipe(REPO / "recipes" / "speech_lm_prior.yaml", [
        f"tokenizer={tok_path}", f"data.root={tmp_path / 'two'}", "data.kind=codes", "data.rule=fsdd",
        "data.shifts=0", "model.context=12", "model.config={dim: 16, layers: 1, heads: 2, max_len: 30}",
        "train.max_steps=1"])
    with pytest.raises(coding.VqtokError, match="files with 2 of the tokenizer's 3 codebooks"):
        train_prior(recipe, tmp_path / "run", progress=False, plot=False)
