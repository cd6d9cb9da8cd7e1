"""nets: the CPU channels-last convolutions compute what nn.Conv1d / nn.ConvTranspose1d do; HardELU is max(x, -1)."""

import pytest
import torch
from torch import nn

from vqtok.tokenizer import nets

CONVS = [  # (in, out, kernel, stride, padding, dilation, bias)
    (1, 32, 7, 1, 3, 1, True),  # a waveform stem: the unfolded-GEMM path
    (1, 8, 5, 2, 1, 2, False),  # stem with stride, dilation, no bias
    (32, 16, 3, 1, 9, 9, True),  # dilated residual conv
    (16, 32, 1, 1, 0, 1, True),  # 1x1
    (32, 64, 10, 5, 3, 1, True),  # downsample
]


@pytest.mark.parametrize("c_in, c_out, k, s, p, d, bias", CONVS)
def test_conv1d_matches_torch_in_values_gradients_and_state_dict(c_in, c_out, k, s, p, d, bias):
    torch.manual_seed(0)
    ours = nets.Conv1d(c_in, c_out, k, stride=s, padding=p, dilation=d, bias=bias)
    ref = nn.Conv1d(c_in, c_out, k, stride=s, padding=p, dilation=d, bias=bias)
    ref.load_state_dict(ours.state_dict())
    assert list(ours.state_dict()) == list(ref.state_dict())
    x = torch.randn(3, c_in, 401, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_()
    y, y_ref = ours(x), ref(x_ref)
    assert y.shape == y_ref.shape and torch.allclose(y, y_ref, atol=1e-5, rtol=1e-5)
    grad = torch.randn_like(y_ref)
    y.backward(grad)
    y_ref.backward(grad)
    assert torch.allclose(x.grad, x_ref.grad, atol=1e-5, rtol=1e-5)
    assert torch.allclose(ours.weight.grad, ref.weight.grad, atol=1e-4, rtol=1e-4)
    z = ours(y.detach()[:, :, 5:]) if c_out == c_in else None  # a cropped, channels-last input is fine too
    assert z is None or torch.allclose(z, ref(y_ref.detach()[:, :, 5:]), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("c_in, c_out, stride", [(32, 32, 2), (64, 32, 5), (8, 1, 3)])
def test_conv_transpose1d_matches_torch(c_in, c_out, stride):
    torch.manual_seed(1)
    ours = nets.upsample(1, c_in, c_out, stride)
    ref = nn.ConvTranspose1d(c_in, c_out, ours.kernel_size, stride=ours.stride, padding=ours.padding,
                             output_padding=ours.output_padding)
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(2, c_in, 250, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_()
    y, y_ref = ours(x), ref(x_ref)
    assert y.shape == (2, c_out, 250 * stride) == y_ref.shape
    assert torch.allclose(y, y_ref, atol=1e-5, rtol=1e-5)
    y.sum().backward()
    y_ref.sum().backward()
    assert torch.allclose(x.grad, x_ref.grad, atol=1e-4, rtol=1e-4)


def test_a_1d_encoder_and_decoder_use_them_and_images_keep_torchs():
    enc = nets.Encoder(1, 1, [8, 16], [2, 2], 4)
    dec = nets.Decoder(1, 4, [8, 16], [2, 2], 1)
    assert any(type(m) is nets.Conv1d for m in enc.modules())
    assert any(type(m) is nets.ConvTranspose1d for m in dec.modules())
    assert not any(isinstance(m, nets.Conv1d) for m in nets.Encoder(2, 1, [8], [2], 4).modules())
    x = torch.randn(2, 1, 64)
    assert dec(enc(x)).shape == x.shape


def test_hard_elu_is_max_x_minus_one_with_its_gradient_and_matches_elu_above_zero():
    x = torch.tensor([-3.0, -1.5, -0.5, -1e-3, 0.0, 0.25, 2.0], requires_grad=True)
    act = nets.activation("hard_elu")
    y = act(x)
    assert torch.equal(y, torch.tensor([-1.0, -1.0, -0.5, -1e-3, 0.0, 0.25, 2.0]))
    y.sum().backward()
    assert torch.equal(x.grad, torch.tensor([0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0]))  # floor flat, slope 1 above it
    pos = torch.linspace(0, 5, 11)
    assert torch.equal(act(pos), nn.ELU()(pos))  # same as ELU above 0, same floor far below it
    assert act(torch.tensor([-30.0])).item() == nn.ELU()(torch.tensor([-30.0])).item() == -1.0
    assert act(torch.zeros(2, 3)).abs().sum() == 0  # maps 0 to 0, as streaming's padding rule needs


def test_unknown_activation_names_the_choices():
    with pytest.raises(ValueError, match="hard_elu"):
        nets.activation("softsign")


@pytest.mark.parametrize("act, dims", [("hard_elu", 1), ("hard_elu", 2), ("elu", 1)])
def test_without_autograd_the_in_place_path_gives_the_same_numbers_and_leaves_the_input_alone(act, dims):
    torch.manual_seed(0)
    enc = nets.Encoder(dims, 1, [8, 16], [2, 2], 4, res_depth=2, dilation_growth=3 if dims == 1 else 1, act=act)
    dec = nets.Decoder(dims, 4, [8, 16], [2, 2], 1, res_depth=2, dilation_growth=3 if dims == 1 else 1, act=act)
    x = 2 * torch.randn(2, 1, *([64] * dims))  # large enough that many activations hit HardELU's floor
    keep = x.clone()
    with torch.enable_grad():
        z_ref = enc(x)
        y_ref = dec(z_ref)
    assert z_ref.requires_grad  # the reference ran the autograd path
    with torch.no_grad():
        z = enc(x)
        y = dec(z)
        h = dec.net[0](z)
        block_in = h.clone()
        block_out = dec.net[1](h)  # a ResBlock alone
    assert torch.equal(x, keep) and torch.equal(h, block_in)  # inputs untouched
    assert torch.equal(block_out, dec.net[1](h.requires_grad_()).detach())
    if dims == 2:
        assert torch.equal(z, z_ref) and torch.equal(y, y_ref)
    else:  # the 1-D blocks inside a network sum x + conv + bias in another order (ResBlock.add_to): float rounding
        torch.testing.assert_close(z, z_ref, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("channels, length", [(32, 1000), (48, 333), (256, 50)])
def test_a_1d_resblock_adds_into_an_owned_input_what_it_would_return(channels, length):
    torch.manual_seed(channels)
    block = nets.ResBlock(1, channels, dilation=3, act="hard_elu")
    x = nets._rows(2 * torch.randn(2, channels, length)).squeeze(2)  # channels-last, as the layers before make it
    with torch.no_grad():
        ref = block(x)
        owned = x.clone()
        out = block.add_to(owned)
        plain = x.contiguous()  # another layout takes the plain path: the same numbers
        torch.testing.assert_close(block.add_to(plain.clone()), ref, rtol=1e-5, atol=1e-6)
    assert out.data_ptr() == owned.data_ptr()  # written into the input, no new tensor
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    assert not torch.equal(out, x)  # the block did change it
    with torch.enable_grad():  # with autograd it never overwrites
        leaf = x.clone().requires_grad_()
        y = block.add_to(leaf)
        assert y.data_ptr() != leaf.data_ptr() and torch.equal(leaf.detach(), x)
    seen = []  # a hook on the last conv (batch encoding masks each conv's input so) still sees it run
    handle = block.block[-1].register_forward_pre_hook(lambda module, args: seen.append(args[0].shape))
    with torch.no_grad():
        assert torch.equal(block.add_to(x.clone()), ref) and seen == [(2, channels // 2, length)]
    handle.remove()


def test_the_kept_channels_last_weight_follows_weight_changes():
    conv = nets.Conv1d(4, 6, 3, padding=1)
    ref = nn.Conv1d(4, 6, 3, padding=1)
    x = torch.randn(2, 4, 20)
    with torch.no_grad():
        for change in (lambda w: w.mul_(-2.0), lambda w: w.copy_(torch.randn_like(w))):
            ref.load_state_dict(conv.state_dict())
            torch.testing.assert_close(conv(x), ref(x), rtol=1e-5, atol=1e-5)
            change(conv.weight)  # an in-place update (an optimizer step, load_state_dict) must not be missed
        conv.weight = nn.Parameter(torch.randn(6, 4, 3))  # a new tensor altogether
        ref.load_state_dict(conv.state_dict())
        torch.testing.assert_close(conv(x), ref(x), rtol=1e-5, atol=1e-5)
        conv.load_state_dict(nn.Conv1d(4, 6, 3, padding=1).state_dict())
        ref.load_state_dict(conv.state_dict())
        torch.testing.assert_close(conv(x), ref(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dims", [1, 2])
def test_a_deeper_decoder_loaded_from_a_shallower_one_computes_the_same_and_its_new_blocks_learn(dims):
    torch.manual_seed(0)
    growth = 3 if dims == 1 else 1
    old = nets.Decoder(dims, 4, [8, 16], [2, 2], 1, res_depth=2, dilation_growth=growth, act="hard_elu")
    new = nets.Decoder(dims, 4, [8, 16], [2, 2], 1, res_depth=4, dilation_growth=growth, act="hard_elu")
    new.load_shallower(old)
    z = torch.randn(2, 4, *([16] * dims))
    assert torch.equal(new(z), old(z))
    blocks = [m for m in new.net if isinstance(m, nets.ResBlock)]
    assert len(blocks) == 8
    added = [b for i, b in enumerate(blocks) if i % 4 >= 2]  # each stage's blocks 3 and 4 (dilations 9, 27)
    assert all(not b.block[-1].weight.any() and not b.block[-1].bias.any() for b in added)
    assert [b.dilation for b in added][:2] == ([(growth**2,), (growth**3,)] if dims == 1 else [(1, 1), (1, 1)])
    new(z).square().mean().backward()
    assert all(b.block[-1].weight.grad.abs().sum() > 0 for b in added)  # zeroed, not dead
    with pytest.raises(ValueError, match="more than their residual blocks"):
        nets.Decoder(dims, 4, [8, 32], [2, 2], 1, res_depth=4, dilation_growth=growth).load_shallower(old)
    with pytest.raises(ValueError, match="more than their residual blocks|layers this one lacks"):
        old.load_shallower(new)
