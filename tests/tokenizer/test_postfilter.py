"""The spectral sharpening postfilter: exact overlap-add, bit-identical streaming, what it does to a spectrum, and
where the tokenizer runs it (decode, decode_long, not the codes)."""

import dataclasses

import numpy as np
import pytest
import torch

from vqtok import VqtokError
from vqtok.tokenizer import LevelConfig, TokenizerConfig, build_tokenizer
from vqtok.tokenizer.checkpoint import codes_fingerprint
from vqtok.tokenizer.postfilter import Postfilter, sharpen, window_size


def noise(n: int, seed: int = 0) -> torch.Tensor:
    return 0.1 * torch.randn(n, generator=torch.Generator().manual_seed(seed))


def test_window_is_about_32_ms():
    assert (window_size(8000), window_size(16000), window_size(24000), window_size(48000)) == (256, 512, 1024, 2048)


@pytest.mark.parametrize("n", [0, 1, 63, 64, 1000, 20000])
def test_exponent_one_gives_the_input_back(n):
    x = noise(n)
    y = sharpen(x, 8000, 1.0)
    assert y.shape == x.shape and y.dtype == torch.float32
    torch.testing.assert_close(y, x, rtol=0, atol=2e-7)  # four Hann frames over every sample add up exactly


@pytest.mark.parametrize("cut", [1, 37, 64, 1000, 17000])
def test_any_cut_of_the_clip_gives_the_same_samples(cut):
    x = noise(33333, seed=1)
    whole = sharpen(x, 16000, 1.3)
    post = Postfilter(16000, 1.3)
    pieces = [post.add(x[i:i + cut]) for i in range(0, len(x), cut)] + [post.flush()]
    assert torch.equal(torch.cat(pieces), whole)


def test_peaks_stand_out_and_the_loudness_stays():
    rate, t = 8000, torch.arange(16000) / 8000
    strong, weak = torch.sin(2 * np.pi * 500 * t), 0.1 * torch.sin(2 * np.pi * 1500 * t)
    x = strong + weak
    y = sharpen(x, rate, 1.5)

    def amplitude(signal, freq):  # over the middle second, away from the edges
        mid = signal[4000:12000].double()
        basis = torch.exp(-2j * np.pi * freq * torch.arange(4000, 12000) / rate)
        return float((mid * basis).sum().abs() * 2 / len(mid))

    ratio_in = amplitude(x, 1500) / amplitude(x, 500)
    ratio_out = amplitude(y, 1500) / amplitude(y, 500)
    assert ratio_in == pytest.approx(0.1, rel=1e-3)
    assert ratio_out == pytest.approx(ratio_in**1.5, rel=0.05)  # magnitudes to the power 1.5
    assert float(y[4000:12000].pow(2).mean()) == pytest.approx(float(x[4000:12000].pow(2).mean()), rel=0.05)


def test_silence_stays_silence_and_bad_exponents_are_refused():
    assert torch.equal(sharpen(torch.zeros(5000), 8000, 1.2), torch.zeros(5000))
    with pytest.raises(ValueError, match="positive"):
        Postfilter(8000, 0.0)


def speech_tokenizer(postfilter=None) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = TokenizerConfig(dims=1, sample_rate=8000, postfilter=postfilter,
                          net=LevelConfig(channels=[8, 16], strides=[4, 5], res_depth=1, dilation_growth=3, code_dim=8,
                                          codebook_size=32))
    tok = build_tokenizer(cfg)
    tok.train()(torch.cumsum(torch.randn(4, 1, 4000), -1) * 0.05)  # initialise the codebook
    return tok.eval()


def test_decode_and_decode_long_end_with_the_postfilter_and_the_codes_do_not_change():
    plain, filtered = speech_tokenizer(), speech_tokenizer(postfilter=1.2)
    assert codes_fingerprint(plain) == codes_fingerprint(filtered)  # a decode-side setting
    x = torch.cumsum(torch.randn(30000, generator=torch.Generator().manual_seed(3)), 0) * 0.01
    codes = filtered.encode(x[None])
    assert torch.equal(codes, plain.encode(x[None]))
    raw = plain.decode(codes, size=30000)[0]
    assert torch.equal(filtered.decode(codes, size=30000, postfilter=False)[0], raw)
    out = filtered.decode(codes, size=30000)[0]
    assert torch.equal(out, sharpen(raw, 8000, 1.2)) and not torch.allclose(out, raw, atol=1e-3)
    long = filtered.decode_long(codes, size=30000)[0]
    torch.testing.assert_close(long, out, rtol=0, atol=1e-5)  # the decoder's own block-wise tolerance
    for chunk in (0.1, 0.77, 3.0):
        assert torch.equal(filtered.decode_long(codes, size=30000, chunk_seconds=chunk)[0], long)
    assert torch.equal(filtered.decode_long(codes, size=30000, postfilter=False)[0],
                       plain.decode_long(codes, size=30000)[0])
    batch = filtered.decode(torch.stack([codes, codes.flip(0)]), size=30000)  # each item filtered alone
    assert torch.equal(batch[0, 0], out)


def test_the_postfilter_is_for_audio_and_positive():
    with pytest.raises(VqtokError, match="for audio tokenizers"):
        build_tokenizer(TokenizerConfig(dims=2, postfilter=1.2))
    with pytest.raises(VqtokError, match="positive exponent"):
        build_tokenizer(dataclasses.replace(speech_tokenizer().config, postfilter=-1.0))
