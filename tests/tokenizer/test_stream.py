"""Live coding (stream.py): chunks of any size against the offline encode / decode, emission times, bad input."""

import numpy as np
import pytest
import torch

from testdata import SHARED_DATA
from vqtok import load_tokenizer
from vqtok.tokenizer.stream import StreamDecoder, StreamEncoder
from vqtok.data.audio import load_audio
from vqtok.errors import VqtokError
from vqtok.tokenizer import LevelConfig, TokenizerConfig, build_tokenizer
from vqtok.tokenizer.postfilter import Postfilter, sharpen

FSDD = SHARED_DATA / "fsdd" / "recordings"


@pytest.fixture(scope="module")
def fsdd():
    return load_tokenizer("fsdd")


@pytest.fixture(scope="module")
def speech8k():
    return load_tokenizer("speech-8k")


@pytest.fixture(scope="module")
def clip():
    """Five FSDD recordings back to back: 8 kHz speech, a little over 2 s."""
    files = sorted(FSDD.glob("*_george_*.wav"))[:5]
    return np.concatenate([load_audio(f, 8000)[0] for f in files])


def random_chunks(n, high, seed):
    """Consecutive [start, stop) of random sizes 1..high covering range(n)."""
    rng = np.random.default_rng(seed)
    start = 0
    while start < n:
        stop = min(n, start + int(rng.integers(1, high + 1)))
        yield start, stop
        start = stop


def stream_codes(tok, x, high, seed):
    enc = tok.stream_encoder()
    parts = [enc.push(x[a:b]) for a, b in random_chunks(len(x), high, seed)] + [enc.flush()]
    if tok.levels == 1:
        return torch.cat(parts)
    return [torch.cat([p[i] for p in parts]) for i in range(tok.levels)]


@pytest.mark.parametrize("high", [1, 37, 400, 5000])
def test_stream_encoder_gives_the_offline_codes_for_random_chunk_sizes(fsdd, clip, high):
    x = clip[: 4000] if high == 1 else clip  # one sample at a time is slow: half a second of it
    offline = fsdd.encode_long(x)
    assert torch.equal(stream_codes(fsdd, x, high, seed=high), offline)


def test_stream_encoder_emits_each_frame_once_its_right_context_is_in(fsdd, clip):
    enc = fsdd.stream_encoder()
    hop, right = fsdd.hop, fsdd.context.encode_right  # 25, 450 samples
    given = 0
    for pushed in range(100, 2001, 100):
        given += len(enc.push(clip[pushed - 100 : pushed]))
        assert given == max(0, (pushed - right) // hop)  # e.g. 2000 samples: (2000 - 450) // 25 = 62 frames
    assert given + len(enc.flush()) == 2000 // hop
    assert enc.latency == (450 + 25) / 8000


def test_stream_encoder_one_hop_at_a_time_and_a_ragged_end(fsdd, clip):
    x = clip[: 3013]  # not a whole number of hops: the end is zero-padded like encode's
    enc = fsdd.stream_encoder()
    parts = [enc.push(x[i : i + fsdd.hop]) for i in range(0, len(x), fsdd.hop)] + [enc.flush()]
    codes = torch.cat(parts)
    assert len(codes) == 121
    assert torch.equal(codes, fsdd.encode(x))


def test_stream_encoder_gain_is_a_fixed_scale(fsdd, clip):
    enc = fsdd.stream_encoder(gain_db=6.0)
    codes = torch.cat([enc.push(clip), enc.flush()])
    scaled = clip.astype(np.float32) * np.float32(10 ** (6 / 20))
    assert torch.equal(codes, fsdd.encode(scaled))


@pytest.mark.parametrize("high", [1, 9, 300])
def test_stream_decoder_matches_decode_with_its_postfilter(speech8k, clip, high):
    codes = speech8k.encode(clip)
    dec = speech8k.stream_decoder()
    out = torch.cat([dec.push(codes[a:b]) for a, b in random_chunks(len(codes), high, seed=high)] + [dec.flush()])
    ref = speech8k.decode(codes)[0]  # (T,), postfilter included
    assert out.shape == ref.shape == (len(codes) * speech8k.hop,)
    assert (out - ref).abs().max() < 1e-5 * ref.abs().max()


def test_stream_decoder_emits_each_hop_once_its_right_context_is_in(speech8k, clip):
    codes = speech8k.encode(clip[:4000])  # 160 frames
    dec = speech8k.stream_decoder(postfilter=False)
    right, hop = speech8k.context.decode_right, speech8k.hop  # 18 hops of 25 samples
    given = []
    for n in range(10, 161, 10):
        given.append(dec.push(codes[n - 10 : n]))
        assert sum(len(g) for g in given) == max(0, n - right) * hop
    given.append(dec.flush())
    out = torch.cat(given)
    assert (out - speech8k.decode(codes, postfilter=False)[0]).abs().max() < 1e-5
    # the postfilter, frame by frame, is the offline one exactly
    assert torch.equal(sharpen(out, 8000, speech8k.postfilter), sharpen_streamed(out, speech8k))
    assert dec.latency == (18 + 1) * 25 / 8000


def sharpen_streamed(audio, tok):
    post = Postfilter(tok.sample_rate, tok.postfilter, group=1)
    return torch.cat([post.add(audio[i : i + 7]) for i in range(0, len(audio), 7)] + [post.flush()])


def test_stream_two_levels_in_whole_hops():
    torch.manual_seed(0)
    cfg = TokenizerConfig(
        arch="vqvae2", dims=1, sample_rate=8000,
        net=LevelConfig(channels=[8, 16], strides=[4, 5], res_depth=1, dilation_growth=3, code_dim=8, codebook_size=64),
        top=LevelConfig(channels=[16], strides=[2], res_depth=1, code_dim=8, codebook_size=32),
    )
    tok = build_tokenizer(cfg).eval()
    x = (torch.cumsum(torch.randn(3000), 0) * 0.05).numpy()
    top, bottom = stream_codes(tok, x, 300, seed=3)
    ref_top, ref_bottom = tok.encode(x)
    assert torch.equal(top, ref_top) and torch.equal(bottom, ref_bottom)
    dec = tok.stream_decoder()
    out = torch.cat([dec.push([top[i : i + 3], bottom[2 * i : 2 * i + 6]]) for i in range(0, len(top), 3)]
                    + [dec.flush()])
    assert (out - tok.decode([top, bottom])[0]).abs().max() < 1e-5
    with pytest.raises(VqtokError, match="whole hops"):
        tok.stream_decoder().push([top[:2], bottom[:3]])


def test_bad_input_is_one_clear_error_each(fsdd):
    enc = fsdd.stream_encoder()
    with pytest.raises(VqtokError, match="16000 Hz, but this tokenizer codes 8000 Hz"):
        enc.push(np.zeros(100, np.float32), sample_rate=16000)
    with pytest.raises(VqtokError, match="dtype int16; pass float samples in \\[-1, 1\\] \\(int16 PCM"):
        enc.push(np.zeros(100, np.int16))
    with pytest.raises(VqtokError, match="2 NaN or Inf samples"):
        enc.push(np.array([0.0, np.nan, 0.1, np.inf], np.float32))
    with pytest.raises(VqtokError, match="shape \\(2, 10\\)"):
        enc.push(np.zeros((2, 10), np.float32))
    enc.flush()
    with pytest.raises(VqtokError, match="was already flushed"):
        enc.flush()
    with pytest.raises(VqtokError, match="flushed; start a new one"):
        enc.push(np.zeros(10, np.float32))
    dec = fsdd.stream_decoder()
    with pytest.raises(VqtokError, match="ids 0..1024, outside the 1024-code codebook"):
        dec.push(np.array([0, 1024]))
    with pytest.raises(VqtokError, match="ids -1..3"):
        dec.push(torch.tensor([-1, 3]))
    with pytest.raises(VqtokError, match="dtype float32; codes are integers"):
        dec.push(np.zeros(3, np.float32))
    with pytest.raises(VqtokError, match="streaming is for audio tokenizers"):
        StreamEncoder(load_tokenizer("mnist"))
    with pytest.raises(VqtokError, match="streaming is for audio tokenizers"):
        StreamDecoder(load_tokenizer("mnist"))


def test_stream_a_multi_codebook_tokenizer_and_a_prefix():
    from vqtok.tokenizer.quantizer import QuantizerConfig
    from vqtok.tokenizer.train_latent import stacked_tokenizer

    torch.manual_seed(0)
    net = LevelConfig(channels=[8, 16], strides=[2, 5], res_depth=1, code_dim=8, codebook_size=16,
                      encoder_stem="patch", dilation_growth=3)
    level = LevelConfig(channels=[16, 16], strides=[2, 2], res_depth=1, dilation_growth=3, code_dim=8, codebooks=3,
                        codebook_size=16, activation="elu")
    tok = stacked_tokenizer(build_tokenizer(TokenizerConfig(dims=1, sample_rate=8000, net=net)).eval(), level,
                            QuantizerConfig(kmeans_iters=1)).train()
    tok(torch.randn(2, 1, 800) * 0.1)  # k-means init of every stage
    tok.eval()
    x = (torch.cumsum(torch.randn(3000), 0) * 0.02).numpy()
    enc = tok.stream_encoder()
    codes = torch.cat([enc.push(x[i : i + 77]) for i in range(0, len(x), 77)] + [enc.flush()], dim=-1)
    assert torch.equal(codes, tok.encode_long(x))  # (3, 75): every stage, time last
    dec = tok.stream_decoder()
    out = torch.cat([dec.push(codes[:2, i : i + 5]) for i in range(0, 75, 5)] + [dec.flush()])
    with torch.no_grad():
        assert (out - tok.decode(codes[:2])[0]).abs().max() < 1e-5  # a prefix of two stages
    with pytest.raises(VqtokError, match="keep the codebook count of the first push"):
        dec = tok.stream_decoder()
        dec.push(codes[:2, :5])
        dec.push(codes[:, 5:10])
    with pytest.raises(VqtokError, match="codebooks <= 3"):
        tok.stream_decoder().push(codes[0])
