"""VQVAE / VQVAE2: shapes at any size, eval round trip, properties, overfitting one batch."""

import math
from dataclasses import replace

import pytest
import torch

from vqtok.tokenizer import LevelConfig, TokenizerConfig, build_tokenizer
from vqtok.tokenizer.nets import ResBlock


def tiny_config(dims: int, arch: str = "vqvae", sample_rate=None) -> TokenizerConfig:
    strides = [2, 4] if dims == 1 else [2, 2]
    return TokenizerConfig(
        arch=arch,
        dims=dims,
        sample_rate=sample_rate,
        net=LevelConfig(channels=[8, 16], strides=strides, res_depth=1, code_dim=8, codebook_size=32,
                        dilation_growth=3 if dims == 1 else 1),
        top=LevelConfig(channels=[16], strides=[2], res_depth=1, code_dim=8, codebook_size=16) if arch == "vqvae2" else None,
    )


@pytest.mark.parametrize("arch", ["vqvae", "vqvae2"])
def test_random_lengths_come_back_at_input_shape_1d(arch):
    model = build_tokenizer(tiny_config(1, arch, sample_rate=8000))
    gen = torch.Generator().manual_seed(3)
    for _ in range(4):
        t = int(torch.randint(1, 500, (1,), generator=gen))
        x = torch.randn(2, 1, t)
        out = model(x)
        assert out.recon.shape == x.shape
        shapes = model.code_shape(t)
        assert [tuple(c.shape[1:]) for c in out.codes] == shapes
        model.eval()
        assert model.decode(model.encode(x), t).shape == x.shape
        model.train()


@pytest.mark.parametrize("arch", ["vqvae", "vqvae2"])
def test_non_square_images_come_back_at_input_shape(arch):
    model = build_tokenizer(tiny_config(2, arch))
    for h, w in [(28, 28), (13, 30), (33, 9)]:
        x = torch.rand(2, 1, h, w)
        out = model(x)
        assert out.recon.shape == x.shape
        assert [tuple(c.shape[1:]) for c in out.codes] == model.code_shape((h, w))


@pytest.mark.parametrize("dims,arch", [(1, "vqvae"), (1, "vqvae2"), (2, "vqvae"), (2, "vqvae2")])
def test_eval_decode_encode_equals_forward(dims, arch):
    model = build_tokenizer(tiny_config(dims, arch, sample_rate=8000 if dims == 1 else None))
    x = torch.randn(3, 1, 64) if dims == 1 else torch.rand(3, 1, 16, 20)
    model.train()(x)  # initialise the codebooks
    model.eval()
    with torch.no_grad():
        out = model(x)
        codes = model.encode(x)
        codes = codes if isinstance(codes, list) else [codes]
        for a, b in zip(codes, out.codes):
            assert torch.equal(a, b)
        recon = model.decode(codes if arch == "vqvae2" else codes[0], x.shape[2:])
    assert torch.equal(recon, out.recon)


def test_unbatched_inputs():
    model = build_tokenizer(tiny_config(1, sample_rate=8000)).eval()
    wav = torch.randn(400)
    codes = model.encode(wav)
    assert codes.shape == (50,)
    assert torch.equal(codes, model.encode(wav[None, None])[0])
    assert model.decode(codes, 400).shape == (1, 400)


def test_properties():
    m1 = build_tokenizer(tiny_config(1, "vqvae2", sample_rate=8000))
    assert m1.levels == 2
    assert m1.codebook_size == (16, 32)
    assert m1.downsample == (16, 8)
    assert m1.frame_rate == (500.0, 1000.0)
    assert m1.bitrate == pytest.approx(500 * 4 + 1000 * 5)
    assert m1.sample_rate == 8000
    m2 = build_tokenizer(tiny_config(2))
    assert m2.levels == 1 and m2.codebook_size == (32,) and m2.downsample == (4,)
    assert m2.sample_rate is None and m2.bitrate is None
    assert m2.code_shape((28, 27)) == [(7, 7)]


def test_audio_mask_keeps_padding_out_of_codebook_stats():
    model = build_tokenizer(tiny_config(1, sample_rate=8000))
    x = torch.randn(2, 1, 64)
    mask = torch.ones(2, 1, 64)
    mask[1, :, 16:] = 0  # second clip: only the first 2 frames (of 8) are real
    out = model(x, mask=mask)
    counts = model.quantizer.cluster_size  # after init these are EMA counts; check the batch count
    assert out.quant[0].codes.shape == (2, 8)
    # 8 + 2 valid frames -> the histogram behind perplexity/usage sums to 10 frames
    assert out.quant[0].usage.item() <= 10 / 32 + 1e-6
    assert counts.shape == (32,)


@pytest.mark.parametrize("arch", ["vqvae", "vqvae2"])
def test_small_vqvae_overfits_one_batch(arch):
    torch.manual_seed(0)
    # Smooth random images: a sum of a few Gaussian blobs each.
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 16), torch.linspace(-1, 1, 16), indexing="ij")
    centres = torch.rand(8, 3, 2) * 1.6 - 0.8
    x = sum(torch.exp(-((xx - centres[:, i, 0, None, None]) ** 2 + (yy - centres[:, i, 1, None, None]) ** 2) / 0.05)
            for i in range(3)).clamp(0, 1)[:, None]
    cfg = tiny_config(2, arch)
    cfg.net.channels, cfg.net.codebook_size = [16, 32], 64
    model = build_tokenizer(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for step in range(150):
        out = model(x)
        mse = (out.recon - x).pow(2).mean()
        loss = mse + out.commit_loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = mse.item() if first is None else first
    model.eval()
    with torch.no_grad():
        final = (model(x).recon - x).pow(2).mean().item()
    assert final < first / 20, (first, final)
    assert not math.isnan(final)


@pytest.mark.parametrize("arch", ["vqvae", "vqvae2"])
def test_encode_runs_its_encoders_without_autograd_and_gives_the_same_codes(arch):
    torch.manual_seed(0)
    tok = build_tokenizer(tiny_config(1, arch, sample_rate=8000))
    tok.train()(torch.randn(2, 1, 256))  # k-means codebook init
    tok.eval()
    seen = []
    hooks = [m.register_forward_hook(lambda *_: seen.append(torch.is_grad_enabled()))
             for m in tok.modules() if type(m).__name__ == "Encoder"]
    x = torch.randn(2, 1, 200)
    with torch.enable_grad():
        codes = tok.encode(x)
    for hook in hooks:
        hook.remove()
    assert seen and not any(seen)  # every encoder ran with autograd off, though the caller had it on
    with torch.enable_grad():
        ref = tok.encode_padded(tok.pad(x))  # per level, on the autograd path
    got = [codes] if arch == "vqvae" else codes
    assert len(got) == len(ref) and all(torch.equal(a, b) for a, b in zip(got, ref))


@pytest.mark.parametrize("arch", ["vqvae", "vqvae2"])
def test_decoder_res_depth_deepens_the_output_decoder_alone(arch):
    base = tiny_config(1, arch, sample_rate=8000)
    deep = replace(base, net=replace(base.net, decoder_res_depth=3))

    def blocks(module):
        return sum(isinstance(m, ResBlock) for m in module.modules())

    a, b = build_tokenizer(base), build_tokenizer(deep)
    assert blocks(b.decoder) == 3 * blocks(a.decoder) and blocks(b) - blocks(b.decoder) == blocks(a) - blocks(a.decoder)
    with pytest.raises(ValueError, match="the istft head's size is `head`"):
        build_tokenizer(replace(base, net=replace(deep.net, decoder_head="istft")))
    if arch == "vqvae2":  # the top level's decoder makes the bottom codes: not an output decoder
        with pytest.raises(ValueError, match="set net.decoder_res_depth"):
            build_tokenizer(replace(base, top=replace(base.top, decoder_res_depth=2)))
