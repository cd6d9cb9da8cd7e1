"""speech_level.py: the gated RMS level of a clip, whole or in pieces, and the gain to a target level."""

import math

import numpy as np
import pytest
import torch

from vqtok import VqtokError, metrics
from vqtok.evaluate import evaluate
from vqtok.tokenizer import LevelConfig, TokenizerConfig, build_tokenizer
from vqtok import speech_level as level

RATE = 8000


def sine(seconds: float, amplitude: float, freq: float = 440.0) -> np.ndarray:
    t = np.arange(round(seconds * RATE)) / RATE
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_a_sine_is_at_its_rms_level():
    assert level.level_db(sine(2.0, 0.5), RATE) == pytest.approx(20 * math.log10(0.5 / math.sqrt(2)), abs=0.01)


def test_silence_and_pauses_are_gated_out_where_the_plain_rms_counts_them():
    speech = sine(2.0, 0.5)
    pause = 0.001 * np.random.default_rng(0).standard_normal(RATE).astype(np.float32)  # -60 dBFS: under -10 dB
    clip = np.concatenate([np.zeros(RATE, np.float32), speech, pause, speech, np.zeros(2 * RATE, np.float32)])
    plain = 10 * math.log10(np.mean(np.square(clip, dtype=np.float64)))
    gated = level.level_db(clip, RATE)
    # the 400 ms blocks that overlap an edge of the speech pass the gates too: 0.6 dB under the speech alone
    assert gated == pytest.approx(level.level_db(speech, RATE) - 0.6, abs=0.1)
    assert plain < gated - 2.4  # the RMS of the whole clip counts its 4 s of silence and pause


def test_a_clip_in_pieces_of_any_size_has_the_level_of_the_whole():
    n = 3 * RATE + 123
    clip = np.random.default_rng(1).standard_normal(n).astype(np.float32) * np.linspace(0, 1, n, dtype=np.float32)
    whole = level.level_db(clip, RATE)
    for cuts in ([1, 37, 800, 8000], [4000, 4001], [n - 1]):
        meter = level.LevelMeter(RATE)
        for piece in np.split(clip, np.cumsum(cuts)):
            meter.add(piece)
        assert meter.level_db == whole


def test_short_clips_silence_and_the_gain_limits():
    assert level.level_db(sine(0.2, 0.1), RATE) == pytest.approx(20 * math.log10(0.1 / math.sqrt(2)), abs=0.05)
    assert level.level_db(np.zeros(RATE, np.float32), RATE) == -math.inf
    assert level.gain_to(-math.inf, -24.0) == 0.0
    assert level.gain_to(-30.0, -24.0) == 6.0
    assert level.gain_to(-90.0, -24.0) == level.MAX_GAIN_DB and level.gain_to(6.0, -24.0) == -level.MAX_GAIN_DB
    x = sine(0.5, 0.01)
    assert level.level_db(level.apply_gain(x, 20.0), RATE) == pytest.approx(level.level_db(x, RATE) + 20.0, abs=1e-4)


def test_a_tokenizer_brings_audio_to_its_level_db_and_says_by_how_much():
    config = TokenizerConfig(dims=1, sample_rate=RATE, level_db=-20.0,
                             net=LevelConfig(channels=[4], strides=[2], res_depth=1, code_dim=4, codebook_size=8))
    tok = build_tokenizer(config)
    x = sine(1.0, 0.01)  # -43 dBFS
    y, gain = tok.at_level(x)
    assert gain == pytest.approx(-20.0 - level.level_db(x, RATE)) and gain == pytest.approx(23.0, abs=0.1)
    assert torch.equal(y, torch.from_numpy(level.apply_gain(x, gain)))
    assert level.level_db(y.numpy(), RATE) == pytest.approx(-20.0, abs=1e-4)
    config.level_db = None
    y, gain = build_tokenizer(config).at_level(x)
    assert gain == 0.0 and torch.equal(y, torch.from_numpy(x))


def test_vqtok_eval_scores_each_clip_encoded_at_the_level_and_brought_back():
    config = TokenizerConfig(dims=1, sample_rate=RATE, level_db=-20.0,
                             net=LevelConfig(channels=[4, 8], strides=[2, 2], res_depth=1, code_dim=4,
                                             codebook_size=16))
    tok = build_tokenizer(config)
    tok.train()(torch.randn(2, 1, 512) * 0.1)  # k-means codebook init
    tok.eval()
    x = sine(1.0, 0.01) + 0.001 * np.random.default_rng(0).standard_normal(RATE).astype(np.float32)
    result = evaluate(tok, iter([("a", x)]), with_pesq=False, with_stoi=False)
    at, gain = tok.at_level(x)
    with torch.no_grad():
        y = tok.decode_long(tok.encode_long(at), size=len(x))[0].numpy() * 10 ** (-gain / 20)
    assert gain > 20
    assert result["metrics"]["log_mel_distance"] == pytest.approx(metrics.log_mel_distance(y, x, RATE), rel=1e-4)


def test_level_db_is_for_audio_tokenizers_only():
    with pytest.raises(VqtokError, match="level_db -24.0 is a speech level"):
        build_tokenizer(TokenizerConfig(dims=2, level_db=-24.0))
