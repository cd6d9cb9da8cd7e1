"""arch 'stacked': a residual-VQ level between a base tokenizer's encoder and decoder, and its latent trainer."""

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from vqtok.tokenizer.base import LevelConfig, TokenizerConfig
from vqtok.tokenizer.checkpoint import build_tokenizer, load_tokenizer, save_tokenizer
from vqtok.tokenizer.quantizer import QuantizerConfig
from vqtok.tokenizer.train_latent import load_latent_recipe, stacked_tokenizer, train_latent_level

LEVEL = LevelConfig(channels=[16, 16], strides=[2, 2], res_depth=1, dilation_growth=3, code_dim=8, codebooks=3,
                    codebook_size=16, quantizer_dropout=0.5, activation="elu")


def small_base():
    torch.manual_seed(0)
    net = LevelConfig(channels=[8, 16], strides=[2, 5], res_depth=1, code_dim=8, codebook_size=16,
                      encoder_stem="patch", dilation_growth=3)
    base = build_tokenizer(TokenizerConfig(dims=1, sample_rate=8000, net=net)).train()
    t = torch.arange(4000.0)
    base(torch.stack([torch.sin(t * f) for f in (0.03, 0.1, 0.3, 0.7)])[:, None] * 0.1)  # k-means init: codes in use
    return base.eval()


def trained_stacked():
    tok = stacked_tokenizer(small_base(), LEVEL, QuantizerConfig(kmeans_iters=1)).train()
    tok(torch.randn(2, 1, 800) * 0.1)  # k-means init of every stage
    return tok.eval()


def test_stacked_codes_and_prefixes():
    tok = trained_stacked()
    assert tok.downsample == (40,) and tok.frame_rate == (200.0,) and tok.codebooks == 3
    assert tok.bitrate == 200 * 3 * 4 and tok.bitrate_at(1) == 200 * 4
    x = torch.randn(1, 1, 333) * 0.1
    codes = tok.encode(x)
    assert codes.shape == (1, 3, 9)  # 333 samples padded to 360 = 9 frames of 40
    assert torch.equal(tok.encode(x[0, 0]), codes[0])  # unbatched (T,) -> (Q, T')
    for n in (1, 2):
        assert torch.equal(tok.encode(x, codebooks=n), codes[:, :n])
    # eval forward is decode(encode(x)), trimmed
    assert torch.allclose(tok(x).recon, tok.decode(codes, size=333, postfilter=False), atol=1e-6)
    # a prefix decodes to the decoder applied to the level's partial sum
    part = codes[0, :2]
    expected = tok.decoder(tok.level.decode(part[None]))[..., :333]
    assert torch.allclose(tok.decode(part, size=333), expected[0], atol=1e-6)
    with pytest.raises(ValueError, match="between 1 and 3"):
        tok.encode(x, codebooks=4)
    with pytest.raises(ValueError, match="4 codebooks; this quantizer has 3"):
        tok.decode(torch.zeros(4, 9, dtype=torch.long))


def test_stacked_saves_and_loads_with_its_codes(tmp_path):
    tok = trained_stacked()
    path = tmp_path / "t.safetensors"
    save_tokenizer(tok, path)
    back = load_tokenizer(path)
    x = torch.randn(1, 1, 400) * 0.1
    assert torch.equal(back.encode(x), tok.encode(x))
    assert back.config.top.codebooks == 3 and back.config.arch == "stacked"
    # the base's encoder and decoder are the base's
    base = small_base()
    assert torch.equal(back.encoder.net[1].weight, base.encoder.net[1].weight)


def test_stacked_block_wise_and_batched_coding_equal_whole_clip():
    tok = trained_stacked()
    wav = torch.randn(8000 * 9 + 123) * 0.1  # several 4 s blocks at 8 kHz
    codes = tok.encode(wav)
    assert tok.block_frames * tok.hop < len(wav)
    for chunk in (None, 0.37):
        assert torch.equal(tok.encode_long(wav.numpy(), chunk_seconds=chunk), codes)
    # block-wise decoding equals whole-clip decoding, for a prefix too
    for n in (3, 1):
        whole = tok.decode(codes[:n], size=len(wav), postfilter=False)
        assert torch.allclose(tok.decode_long(codes[:n], size=len(wav), postfilter=False), whole, atol=1e-5)
    # batched clips of other lengths get what each gets alone
    clips = [wav[:5000], wav[:2000], wav]
    for got, clip in zip(tok.encode_batch(clips, batch_size=3), clips):
        assert torch.equal(got, tok.encode_long(clip.numpy()))


def test_new_level_fields_leave_earlier_fingerprints_alone():
    from vqtok.tokenizer.checkpoint import architecture, to_dict

    cfg = to_dict(TokenizerConfig(dims=1, sample_rate=8000))
    arch = architecture(cfg)
    assert "codebooks" not in arch["net"] and "activation" not in arch["net"]
    assert "quantizer_dropout" not in arch["net"]
    cfg["net"]["codebooks"] = 4
    assert architecture(cfg)["net"]["codebooks"] == 4


def write_corpus(root: Path) -> None:
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        (root / split).mkdir(parents=True)
        for i in range(3):
            t = np.arange(8000 + 2000 * i)
            wav = 0.1 * np.sin(t * 0.05 * (i + 1)) + 0.01 * rng.standard_normal(len(t))
            sf.write(root / split / f"{i}.wav", wav.astype(np.float32), 16000)  # resampled to the base's 8 kHz


def recipe_dict(base_path: Path, root: Path) -> dict:
    train = {"batch_size": 2, "lr": 1e-3, "warmup_steps": 1, "log_every": 1, "valid_every": 100, "save_every": 1,
             "threads": 1}
    return {
        "task": "latent_level", "name": "tiny", "base": str(base_path),
        "level": {k: v for k, v in vars(copy.deepcopy(LEVEL)).items() if k != "head"},
        "quantizer": {"kmeans_iters": 1},
        "data": {"root": str(root), "valid_pieces": 2},
        "stages": [{"train": {**train, "max_steps": 3}, "segment_seconds": 0.1},
                   {"train": {**train, "max_steps": 3}, "segment_seconds": 0.1,
                    "loss": {"stft": 1.0, "l1": 1.0, "fft_sizes": [64, 128], "train_decoder": True,
                             "decoder_only": True}}],
    }


def test_latent_trainer_resumes_bit_exact(tmp_path, monkeypatch):
    base_path = tmp_path / "base.safetensors"
    save_tokenizer(small_base(), base_path)
    write_corpus(tmp_path / "data")
    recipe = load_latent_recipe(recipe_dict(base_path, tmp_path / "data"))
    whole = train_latent_level(recipe, tmp_path / "whole", progress=False)
    assert (tmp_path / "whole" / "stage1" / "tokenizer.safetensors").exists()
    rows = [json.loads(line) for line in (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()]
    stage2 = [r for r in rows if r.get("stage") == 2.0]
    assert len(stage2) == 3 and all(r["l1"] > 0 and r["stft"] > 0 for r in stage2)  # the waveform terms of stage 2

    # the same run stopped in the middle of stage 2 (after its first step), then resumed
    from vqtok.tokenizer import train_latent

    real, calls = train_latent.draw_batch, {"n": 0}

    def stop_after_four(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(train_latent, "draw_batch", stop_after_four)
    with pytest.raises(KeyboardInterrupt):
        train_latent_level(recipe, tmp_path / "cut", progress=False)
    monkeypatch.setattr(train_latent, "draw_batch", real)
    resumed = train_latent_level(recipe, tmp_path / "cut", resume=True, progress=False)
    for (name, a), (_, b) in zip(whole.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), name
    # stage 2 trained the decoders: the base's moved; the codes did not (decoder_only)
    assert not torch.equal(whole.decoder.net[0].weight, load_tokenizer(base_path).decoder.net[0].weight)
    first = load_tokenizer(tmp_path / "whole" / "stage1" / "tokenizer.safetensors")
    last = load_tokenizer(tmp_path / "whole" / "tokenizer.safetensors")
    assert first.codes_fingerprint == last.codes_fingerprint and first.fingerprint != last.fingerprint
    assert not torch.equal(first.level.decoder.net[0].weight, last.level.decoder.net[0].weight)


def test_init_starts_from_a_stacked_tokenizer(tmp_path):
    from vqtok.errors import VqtokError
    from vqtok.tokenizer.train_latent import start_from

    base = small_base()
    save_tokenizer(base, tmp_path / "base.safetensors")
    torch.manual_seed(1)
    src = stacked_tokenizer(base, LEVEL, QuantizerConfig(kmeans_iters=1)).train()
    src(torch.randn(2, 1, 4000) * 0.1)  # k-means init: the codebooks are data, not zeros
    src.decoder.net[0].weight.data += 1.0  # a decoder that is no longer the base's
    save_tokenizer(src.eval(), tmp_path / "src.safetensors")
    torch.manual_seed(2)
    tok = stacked_tokenizer(base, LEVEL, QuantizerConfig(kmeans_iters=1))
    start_from(tok, base, str(tmp_path / "src.safetensors"), "base")
    for (name, a), (_, b) in zip(src.state_dict().items(), tok.state_dict().items()):
        assert torch.equal(a, b), name
    other = small_base()
    next(other.encoder.parameters()).data += 1.0
    with pytest.raises(VqtokError, match="does not stack on the recipe's base"):
        start_from(tok, other, str(tmp_path / "src.safetensors"), "base")
    with pytest.raises(VqtokError, match="is not a stacked tokenizer"):
        start_from(tok, base, str(tmp_path / "base.safetensors"), "base")


def test_init_deepens_the_level_decoder_and_keeps_the_codes(tmp_path):
    from dataclasses import replace

    from vqtok.errors import VqtokError
    from vqtok.tokenizer.checkpoint import codes_fingerprint
    from vqtok.tokenizer.train_latent import start_from

    base = small_base()
    torch.manual_seed(1)
    src = stacked_tokenizer(base, LEVEL, QuantizerConfig(kmeans_iters=1)).train()
    src(torch.randn(2, 1, 4000) * 0.1)
    save_tokenizer(src.eval(), tmp_path / "src.safetensors")
    deeper = replace(LEVEL, decoder_res_depth=3)
    tok = stacked_tokenizer(base, deeper, QuantizerConfig(kmeans_iters=1)).eval()
    n_blocks = sum(type(m).__name__ == "ResBlock" for m in tok.level.decoder.net)
    assert n_blocks == 3 * len(LEVEL.channels)  # the level's decoder follows decoder_res_depth
    start_from(tok, base, str(tmp_path / "src.safetensors"), "base")
    x = torch.randn(1, 1, 800) * 0.1
    codes = src.encode(x)
    assert torch.equal(tok.encode(x), codes)
    assert codes_fingerprint(tok) == codes_fingerprint(src)  # token files of init decode with the deeper level
    # the added blocks start as the identity: the same audio until the deeper decoder trains
    assert torch.allclose(tok.decode(codes[0], size=800), src.decode(codes[0], size=800), atol=1e-6)
    shallower = stacked_tokenizer(base, replace(LEVEL, channels=[16, 24]), QuantizerConfig(kmeans_iters=1))
    with pytest.raises(VqtokError, match="level does not fit"):
        start_from(shallower, base, str(tmp_path / "src.safetensors"), "base")


def test_latent_recipe_is_strict():
    from vqtok.errors import VqtokError

    with pytest.raises(VqtokError, match="unknown key 'stages\\[0\\].loss.wave'"):
        load_latent_recipe({"stages": [{"loss": {"wave": 1}}]})
    with pytest.raises(VqtokError, match="train_decoder needs"):
        load_latent_recipe({"stages": [{"loss": {"train_decoder": True}}]})
    assert load_latent_recipe({"stages": [{"loss": {"train_decoder": True, "l1": 1.0}}]}).stages[0].loss.l1 == 1.0


def test_shipped_recipe_parses():
    recipes = Path(__file__).resolve().parents[2] / "recipes"
    recipe = load_latent_recipe(yaml.safe_load((recipes / "speech_lm16k.yaml").read_text()))
    assert recipe.level.codebooks == 8 and recipe.base == "speech-16k" and recipe.init is None


def test_token_files_hold_any_prefix(tmp_path):
    from vqtok.errors import VqtokError
    from vqtok.tokenizer.codes import read_codes, write_codes

    tok = trained_stacked()
    save_tokenizer(tok, tmp_path / "t.safetensors")
    tok = load_tokenizer(tmp_path / "t.safetensors")
    assert tok.code_shape(333) == [(3, 9)] and tok.seconds_to_frames(333 / 8000) == 9
    codes = tok.encode(torch.randn(333) * 0.1)
    for n in (3, 1):
        meta = write_codes(tmp_path / f"c{n}.npy", codes[:n], tok, {"kind": "audio", "length": 333})
        assert meta["tokenizer"]["codebooks"] == 3 and meta["levels"][0]["shape"] == [n, 9]
        back = read_codes(tmp_path / f"c{n}.npy", tok)
        assert np.array_equal(back.levels[0], codes[:n].numpy())
    with pytest.raises(VqtokError, match="do not fit"):
        write_codes(tmp_path / "c4.npy", torch.zeros(4, 9, dtype=torch.long), tok, {"kind": "audio", "length": 333})


def test_cli_encodes_a_prefix_and_decodes_it(tmp_path):
    from click.testing import CliRunner

    from vqtok.cli import main

    tok = trained_stacked()
    model = tmp_path / "t.safetensors"
    save_tokenizer(tok, model)
    wav = (np.sin(np.arange(4000) * 0.07) * 0.2).astype(np.float32)
    sf.write(tmp_path / "a.wav", wav, 8000)
    runner = CliRunner()
    for n, name in ((None, "all.npy"), (2, "two.npy")):
        args = ["encode", str(tmp_path / "a.wav"), "-m", str(model), "-o", str(tmp_path / name)]
        result = runner.invoke(main, args + (["--codebooks", str(n)] if n else []))
        assert result.exit_code == 0, result.output
    full, two = np.load(tmp_path / "all.npy"), np.load(tmp_path / "two.npy")
    assert full.shape == (3, 100) and np.array_equal(two, full[:2])
    result = runner.invoke(main, ["decode", str(tmp_path / "two.npy"), "-m", str(model)])
    assert result.exit_code == 0, result.output
    decoded, rate = sf.read(tmp_path / "two.decoded.wav")
    assert rate == 8000 and len(decoded) == 4000
    result = runner.invoke(main, ["info", str(tmp_path / "two.npy")])
    assert "codebooks     2 of 3, 1.6 kbit/s" in result.output
    result = runner.invoke(main, ["encode", str(tmp_path / "a.wav"), "-m", str(model), "--codebooks", "4"])
    assert result.exit_code != 0 and "this tokenizer has 3 codebook(s) per frame" in result.output


@pytest.mark.parametrize("layout", ["flat", "delay", "stack"])
def test_token_dataset_serves_multi_codebook_layouts(tmp_path, layout):
    from click.testing import CliRunner

    from vqtok.cli import main
    from vqtok.data import layouts
    from vqtok.data.tokens import TokenDataset

    model = tmp_path / "t.safetensors"
    save_tokenizer(trained_stacked(), model)
    (tmp_path / "wavs").mkdir()
    for i, n in enumerate((3000, 4200)):
        sf.write(tmp_path / "wavs" / f"{i}.wav", (np.sin(np.arange(n) * 0.05 * (i + 1)) * 0.2).astype(np.float32),
                 8000)
    result = CliRunner().invoke(main, ["encode", str(tmp_path / "wavs"), "-m", str(model), "-o",
                                       str(tmp_path / "codes"), "--quiet"])
    assert result.exit_code == 0, result.output
    ds = TokenDataset(tmp_path / "codes", layout=layout, add_eos=layout == "flat")
    raw = [torch.from_numpy(np.load(tmp_path / "codes" / f"{i}.npy").astype(np.int64)) for i in range(2)]
    assert raw[0].shape == (3, 75)
    for i in range(2):
        item = ds[i]["codes"]
        if layout == "flat":
            assert ds.vocab[0].codebook_size == 3 * 16
            assert torch.equal(item[:-1], layouts.flatten(raw[i], 16)) and int(item[-1]) == ds.vocab[0].eos
        elif layout == "delay":
            assert torch.equal(layouts.undelay(item), raw[i]) and int(item[1, 0]) == 16  # PAD = K
        else:
            assert torch.equal(item, raw[i].t())
    batch = ds.collate([ds[0], ds[1]])
    assert batch["codes"].shape[0] == 2 and batch["mask"].sum() == sum(ds[i]["codes"].numel() for i in range(2))


def test_corpus_paths_keep_the_prefix(tmp_path):
    pytest.importorskip("pyarrow")
    from click.testing import CliRunner

    from vqtok.cli import main
    from vqtok.data.parquet import codes_by_path

    model = tmp_path / "t.safetensors"
    save_tokenizer(trained_stacked(), model)
    (tmp_path / "wavs").mkdir()
    for i in range(3):
        sf.write(tmp_path / "wavs" / f"{i}.wav", (np.sin(np.arange(2000 + 400 * i) * 0.05) * 0.2).astype(np.float32),
                 8000)
    runner = CliRunner()
    base = ["encode", str(tmp_path / "wavs"), "-m", str(model), "--codebooks", "2", "--quiet"]
    assert runner.invoke(main, base + ["-o", str(tmp_path / "npy")]).exit_code == 0
    result = runner.invoke(main, base + ["-o", str(tmp_path / "pq"), "--format", "parquet"])
    assert result.exit_code == 0, result.output
    rows = codes_by_path(tmp_path / "pq")
    assert len(rows) == 3
    for key, file in rows.items():
        plain = np.load(tmp_path / "npy" / key)
        assert plain.shape[0] == 2 and np.array_equal(file.levels[0], plain)


def test_stacked_streams_like_offline():
    tok = trained_stacked()
    wav = torch.randn(8000 * 5) * 0.1
    offline = tok.encode_long(wav.numpy())
    enc = tok.stream_encoder()
    parts = [enc.push(wav[i : i + 160].numpy()) for i in range(0, len(wav), 160)] + [enc.flush()]
    assert torch.equal(torch.cat([torch.as_tensor(p) for p in parts], dim=-1), offline)  # (Q, T) in 20 ms chunks
    dec = tok.stream_decoder(postfilter=False)
    audio = [dec.push(offline[:, i : i + 3]) for i in range(0, offline.shape[-1], 3)] + [dec.flush()]
    audio = torch.cat([torch.as_tensor(a).reshape(-1) for a in audio])
    assert torch.allclose(audio, tok.decode_long(offline, postfilter=False).reshape(-1), atol=1e-5)
