"""Long audio and batches: receptive fields, block-wise encode/decode identity, exact mixed-length batches."""

import numpy as np
import pytest
import torch

from vqtok.tokenizer import LevelConfig, TokenizerConfig, build_tokenizer, streaming


def audio_model(arch="vqvae", seed=0):
    torch.manual_seed(seed)
    cfg = TokenizerConfig(
        arch=arch, dims=1, sample_rate=8000,
        net=LevelConfig(channels=[8, 16], strides=[4, 5], res_depth=2, dilation_growth=3, code_dim=8, codebook_size=64),
        top=LevelConfig(channels=[16], strides=[2], res_depth=1, code_dim=8, codebook_size=32) if arch == "vqvae2" else None,
    )
    model = build_tokenizer(cfg)
    # k-means init on a smooth-ish signal, so the codebook sits where the latents are (near-ties as in a trained model)
    x = torch.cumsum(torch.randn(8, 1, 4000), -1) * 0.05
    model.train()(x)
    return model.eval()


def image_model(arch="vqvae"):
    torch.manual_seed(0)
    cfg = TokenizerConfig(
        arch=arch, dims=2, net=LevelConfig(channels=[8, 16], strides=[2, 2], res_depth=1, code_dim=8, codebook_size=32),
        top=LevelConfig(channels=[16], strides=[2], res_depth=1, code_dim=8, codebook_size=16) if arch == "vqvae2" else None,
    )
    model = build_tokenizer(cfg)
    model.train()(torch.rand(4, 1, 16, 16))
    return model.eval()


def signal(n, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.cumsum(torch.randn(n, generator=g), 0) * 0.05


def as_list(codes):
    return codes if isinstance(codes, list) else [codes]


def same(a, b):
    return all(torch.equal(x, y) for x, y in zip(as_list(a), as_list(b)))


def gradient_support(fn, x, index):
    """Indices of x (last axis) that output element `index` depends on, from the gradient."""
    x = x.clone().requires_grad_(True)
    fn(x)[index].backward()
    nz = torch.nonzero(x.grad.abs().sum(tuple(range(x.dim() - 1)))).flatten()
    return int(nz.min()), int(nz.max())


@pytest.mark.parametrize("arch", ["vqvae", "vqvae2"])
def test_receptive_field_matches_the_gradient_support(arch):
    model = audio_model(arch).double()
    x = torch.randn(1, 1, 2400, dtype=torch.float64)  # (B, C, T)
    paths = [(p.downsample, p.interval) for p in model.encode_paths()]
    with torch.enable_grad():
        if arch == "vqvae":
            fns = [model.encoder]
        else:
            def bottom_latent(x):
                h_b = model.enc_b(x)
                # codes are piecewise constant (no gradient): the top path is followed through its latent,
                # which reaches exactly the same input samples as the top codes do
                return model.proj_b(torch.cat([h_b, model.dec_t(model.enc_t(h_b))], 1))
            fns = [lambda x: model.enc_t(model.enc_b(x)), bottom_latent]
        for (down, path), fn in zip(paths, fns):
            j = 1200 // down
            lo, hi = gradient_support(fn, x, (0, 0, j))
            assert (lo, hi) == path((j, j)), (arch, down)
    # decoder: output sample -> code frames of each level
    d = model.config.net.code_dim
    o = 1201  # an output sample away from the borders
    with torch.enable_grad():
        if arch == "vqvae":
            q = torch.randn(1, d, 120, dtype=torch.float64)
            assert gradient_support(model.decoder, q, (0, 0, o)) == model.decode_paths()[0].interval((o, o))
        else:
            q_t = torch.randn(1, model.config.top.code_dim, 60, dtype=torch.float64)
            q_b = torch.randn(1, d, 120, dtype=torch.float64)
            top_path, bottom_path = [p.interval for p in model.decode_paths()]
            assert gradient_support(lambda t: model._decode_latents(t, q_b), q_t, (0, 0, o)) == top_path((o, o))
            assert gradient_support(lambda b: model._decode_latents(q_t, b), q_b, (0, 0, o)) == bottom_path((o, o))


@pytest.mark.parametrize("arch", ["vqvae", "vqvae2"])
def test_block_windows_reproduce_the_whole_clip_latents(arch):
    model = audio_model(arch)
    n = 3 * model.block_frames * model.hop + 123
    x = signal(n)
    with torch.no_grad():
        whole = as_list(model.encode(x))
        ratio = [model.hop // d for d in model.downsample]
        for a, b, start, stop in streaming.canonical_windows(model, n):
            xw = torch.nn.functional.pad(x, (0, (-n) % model.hop))[a:b]
            codes = streaming.encode_window(model, xw)
            first = start - a // model.hop
            for lv, (c, r) in enumerate(zip(codes, ratio)):
                kept = c[first * r : (first + stop - start) * r]
                assert torch.equal(kept, whole[lv][start * r : stop * r])


@pytest.mark.parametrize("arch", ["vqvae", "vqvae2"])
def test_long_encode_identical_for_every_chunk_size_and_equal_to_encode(arch):
    model = audio_model(arch)
    n = int(3.3 * model.block_frames * model.hop) + 7
    x = signal(n, seed=2)
    with torch.no_grad():
        ref = model.encode(x)
    for chunk in [None, 0.01, 0.3, 1.0, 7.0]:
        assert same(model.encode_long(x, chunk_seconds=chunk), ref), chunk


def test_stream_encode_with_ragged_pieces():
    model = audio_model()
    n = int(2.5 * model.block_frames * model.hop)
    x = signal(n, seed=3).numpy()
    rng = np.random.default_rng(0)
    cuts = np.sort(rng.choice(np.arange(1, n), size=40, replace=False))
    pieces = np.split(x, cuts) + [np.zeros(0, np.float32)]
    got = streaming.join_levels(list(streaming.stream_encode(model, pieces)), 1)[0]
    assert np.array_equal(got, model.encode_long(torch.from_numpy(x)).numpy())


def test_short_clip_is_exactly_encode():
    model = audio_model()
    for n in [1, 19, 20, 21, 777, model.block_frames * model.hop]:
        x = signal(n, seed=n)
        with torch.no_grad():
            assert same(model.encode_long(x), model.encode(x)), n


@pytest.mark.parametrize("arch", ["vqvae", "vqvae2"])
def test_long_decode_matches_decode_and_is_chunk_independent(arch):
    model = audio_model(arch)
    n = int(2.7 * model.block_frames * model.hop)
    with torch.no_grad():
        codes = model.encode(signal(n, seed=4))
        ref = model.decode(codes, size=n)
    outs = [model.decode_long(codes, size=n, chunk_seconds=c) for c in [None, 0.2, 3.0]]
    assert outs[0].shape == ref.shape == (1, n)
    assert torch.allclose(outs[0], ref, atol=1e-5)
    assert all(torch.equal(outs[0], o) for o in outs[1:])


@pytest.mark.parametrize("arch", ["vqvae", "vqvae2"])
def test_encode_batch_equals_one_by_one_on_mixed_lengths(arch):
    model = audio_model(arch)
    lengths = [1, 39, 40, 41, 500, 1999, 2 * model.block_frames * model.hop + 333, 8000]
    clips = [signal(n, seed=10 + i) for i, n in enumerate(lengths)]
    alone = [model.encode_long(c) for c in clips]
    for batch_size in [None, 3]:
        batched = model.encode_batch(clips, batch_size=batch_size)
        assert len(batched) == len(clips)
        for b, a in zip(batched, alone):
            assert same(b, a)


def test_encode_batch_of_equal_lengths_needs_no_masks_and_equals_one_by_one(monkeypatch):
    model = audio_model()
    clips = [signal(900, seed=s) for s in range(4)]
    masks = []
    original = streaming._masked_convs
    monkeypatch.setattr(streaming, "_masked_convs", lambda m, sizes, full: masks.append(sizes.tolist()) or
                        original(m, sizes, full))
    batched = model.encode_batch(clips, batch_size=4)
    assert masks == [[[900 + (-900) % model.hop]] * 4]  # one batch, no padding in it
    assert all(same(b, model.encode_long(c)) for b, c in zip(batched, clips))


def test_encode_batch_near_ties_fall_back_to_alone(monkeypatch):
    model = audio_model()
    clips = [signal(n, seed=n) for n in [300, 900, 1600]]
    monkeypatch.setattr(streaming, "LATENT_RTOL", {"cpu": 10.0})  # every frame "near a boundary": all alone
    calls = []
    original = model.encode_padded
    monkeypatch.setattr(model, "encode_padded", lambda x, **kw: calls.append(x.shape[0]) or original(x, **kw))
    batched = model.encode_batch(clips)
    assert calls == [3, 1, 1, 1]
    assert all(same(b, model.encode_long(c)) for b, c in zip(batched, clips))


@pytest.mark.parametrize("arch", ["vqvae", "vqvae2"])
def test_encode_batch_images_of_different_sizes(arch):
    model = image_model(arch)
    images = [torch.rand(1, h, w) for h, w in [(16, 16), (13, 30), (9, 8), (28, 28)]]
    batched = model.encode_batch(images, batch_size=4)
    with torch.no_grad():
        for b, img in zip(batched, images):
            assert same(b, model.encode(img))


def test_frame_time_helpers():
    model = audio_model()  # 8000 Hz, hop 20
    assert model.frames_to_seconds(400) == 1.0
    assert model.seconds_to_frames(1.0) == 400
    assert model.seconds_to_frames(0.001) == 1  # 8 samples pad to one frame
    assert model.seconds_to_frames(0.3) == model.code_shape(2400)[0][0]
    two = audio_model("vqvae2")
    assert two.frames_to_seconds(1, level=0) == 40 / 8000
    assert two.seconds_to_frames(1.0, level=0) == 200 and two.seconds_to_frames(1.0) == 400
    with pytest.raises(ValueError):
        image_model().frames_to_seconds(3)
