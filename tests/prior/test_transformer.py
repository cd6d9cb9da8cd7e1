"""Tests for the causal Transformer prior: causality, KV cache, conditioning alignment, NLL, overfitting."""

import math

import pytest
import torch
from einops import rearrange

from vqtok.prior import CausalTransformer, nll_bits, nll_nats


def _dependencies(model: CausalTransformer, codes, labels=None, cond=None) -> torch.Tensor:
    """(T, T) bool: [i, j] is True when logits[:, i] have a nonzero gradient w.r.t. the embedding
    of codes[:, j]."""
    captured = {}

    def leaf(module, inputs, output):  # the embedding output becomes a leaf we can differentiate against
        captured["x"] = output.detach().requires_grad_(True)
        return captured["x"]

    handle = model.tok_emb.register_forward_hook(leaf)
    try:
        logits = model(codes, labels, cond)  # (B, T, K)
    finally:
        handle.remove()
    weights = torch.randn_like(logits)
    rows = []
    for i in range(codes.shape[1]):
        (grad,) = torch.autograd.grad((logits[:, i] * weights[:, i]).sum(), captured["x"], retain_graph=True)
        rows.append((grad != 0).any(dim=-1).any(dim=0))  # (B, T, D) -> (T,)
    return torch.stack(rows)


@pytest.mark.parametrize(
    "shape, positions, num_classes, cond_len, class_bias",
    [
        ((64,), "rotary", None, None, False),  # audio-like 1D sequence
        ((64,), "learned", 3, 16, True),  # bottom level conditioned on 16 top codes (ratio 4)
        ((448,), "rotary", 10, None, True),  # speech_prior.yaml's max_len, class vector at every position
        ((7, 7), "rotary", 10, None, False),  # MNIST-size map in raster order
        ((8, 8), "learned", None, None, False),
        ((14, 14), "rotary", None, None, False),
    ],
)
def test_causal_through_gradients(shape, positions, num_classes, cond_len, class_bias):
    torch.manual_seed(0)
    length = math.prod(shape)
    model = CausalTransformer(
        13, dim=16, layers=2, heads=2, max_len=length, num_classes=num_classes,
        cond_codes=7 if cond_len else None, cond_ratio=length // cond_len if cond_len else None,
        positions=positions, class_bias=class_bias,
    ).double()
    codes = torch.randint(0, 13, (1, *shape)).reshape(1, -1)  # 2D maps: "b h w -> b (h w)", raster order
    labels = torch.tensor([2]) if num_classes else None
    cond = torch.randint(0, 7, (1, cond_len)) if cond_len else None
    deps = _dependencies(model, codes, labels, cond)
    expected = torch.ones(length, length, dtype=torch.bool).tril(-1)  # logits[i] see codes j < i only
    assert torch.equal(deps & ~expected, torch.zeros_like(deps)), "logits depend on current or future codes"
    assert torch.equal(expected & ~deps, torch.zeros_like(deps)), "logits ignore some earlier code"


@pytest.mark.parametrize("positions, class_bias", [("rotary", False), ("learned", False), ("rotary", True)])
def test_kv_cache_steps_match_full_pass(positions, class_bias):
    torch.manual_seed(0)
    model = CausalTransformer(
        17, dim=32, layers=2, heads=4, max_len=40, num_classes=5, cond_codes=9, cond_ratio=4,
        positions=positions, class_bias=class_bias,
    ).eval()
    codes = torch.randint(0, 17, (3, 40))
    labels = torch.tensor([0, 3, 4])
    cond = torch.randint(0, 9, (3, 10))
    full = model(codes, labels, cond)  # (B, T, K)
    cache = model.new_cache(3, 40, labels, cond)
    steps = [model.step(None, cache)] + [model.step(codes[:, t - 1], cache) for t in range(1, 40)]
    torch.testing.assert_close(torch.stack(steps, dim=1), full, atol=1e-5, rtol=1e-5)
    # the reference (no cache) path agrees too, including the empty prefix
    for t in (0, 17):
        reference = model.next_logits(codes[:, :t], labels, cond)
        torch.testing.assert_close(reference, full[:, t], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="full"):
        model.step(codes[:, -1], cache)


def test_start_token_is_per_class():
    torch.manual_seed(0)
    model = CausalTransformer(17, dim=16, layers=1, heads=2, max_len=8, num_classes=4)
    codes = torch.randint(0, 17, (1, 8)).expand(2, 8)
    logits = model(codes, torch.tensor([0, 1]))
    # position 0 sees only the start token, so the class alone decides its logits
    assert (logits[0, 0] - logits[1, 0]).abs().amax() > 1e-4
    same = model(codes, torch.tensor([2, 2]))
    torch.testing.assert_close(same[0], same[1])


def test_class_bias_reaches_every_position_directly():
    torch.manual_seed(0)
    model = CausalTransformer(17, dim=16, layers=1, heads=2, max_len=8, num_classes=4, class_bias=True)
    with torch.no_grad():
        model.class_start.weight.zero_()  # the start token no longer tells the classes apart
    codes = torch.randint(0, 17, (1, 8)).expand(2, 8)
    logits = model(codes, torch.tensor([0, 1]))
    assert (logits[0] - logits[1]).abs().amax(dim=-1).min() > 1e-4  # every position differs by class
    with torch.no_grad():
        model.class_bias.weight.zero_()
    logits = model(codes, torch.tensor([0, 1]))
    torch.testing.assert_close(logits[0], logits[1])  # and that difference came from the class vector
    with pytest.raises(ValueError, match="class_bias needs num_classes"):
        CausalTransformer(17, dim=16, layers=1, heads=2, class_bias=True)


def test_cond_is_aligned_with_the_predicted_code():
    """Input position t carries top frame t // ratio, the frame of the code predicted at t."""
    torch.manual_seed(0)
    ratio, frames = 4, 6
    model = CausalTransformer(
        11, dim=16, layers=2, heads=2, max_len=24, cond_codes=5, cond_ratio=ratio, cond_layers=0
    )
    codes = torch.randint(0, 11, (1, ratio * frames))
    cond = torch.randint(0, 5, (1, frames))
    frame = 3
    changed = cond.clone()
    changed[0, frame] = (changed[0, frame] + 1) % 5
    diff = (model(codes, cond=cond) - model(codes, cond=changed)).abs().amax(dim=-1)[0]  # (T,)
    # no conv stack (cond_layers=0): codes before frame 3 cannot see it; the first code of frame 3 does
    assert torch.all(diff[: frame * ratio] == 0)
    assert torch.all(diff[frame * ratio :] > 1e-6)
    # with the conv stack the (fully known) top codes are seen non-causally, still never bottom codes
    model = CausalTransformer(
        11, dim=16, layers=2, heads=2, max_len=24, cond_codes=5, cond_ratio=ratio, cond_layers=2
    )
    diff = (model(codes, cond=cond) - model(codes, cond=changed)).abs().amax(dim=-1)[0]
    assert diff[frame * ratio - 1] > 1e-6


def test_class_conditioning_changes_logits_everywhere():
    torch.manual_seed(0)
    model = CausalTransformer(11, dim=16, layers=2, heads=2, max_len=20, num_classes=3)
    codes = torch.randint(0, 11, (1, 20))
    diff = (model(codes, torch.tensor([0])) - model(codes, torch.tensor([1]))).abs().amax(dim=-1)
    assert torch.all(diff > 1e-6)


def test_uniform_logits_give_log2_k_bits():
    model = CausalTransformer(512, dim=16, layers=1, heads=2, max_len=64)
    torch.nn.init.zeros_(model.head.weight)
    torch.nn.init.zeros_(model.head.bias)
    codes = torch.randint(0, 512, (2, 7, 7))
    logits = model(rearrange(codes, "b h w -> b (h w)"))
    assert logits.shape == (2, 49, 512)
    assert nll_bits(logits, rearrange(codes, "b h w -> b (h w)")).item() == pytest.approx(9.0, abs=1e-6)


def test_overfits_a_handful_of_sequences():
    torch.manual_seed(0)
    sequences = torch.randint(0, 32, (4, 32))
    model = CausalTransformer(32, dim=32, layers=2, heads=2, max_len=32, num_classes=4)
    labels = torch.arange(4)  # the class start token tells the sequences apart
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        loss = nll_nats(model(sequences, labels), sequences)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert nll_nats(model(sequences, labels), sequences).item() < 0.1


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="positions"):
        CausalTransformer(8, positions="sinusoidal")
    with pytest.raises(ValueError, match="cond_ratio"):
        CausalTransformer(8, cond_codes=4)
    model = CausalTransformer(8, dim=16, layers=1, heads=2, max_len=16, cond_codes=4, cond_ratio=4)
    with pytest.raises(ValueError, match="max_len"):
        model(torch.zeros(1, 17, dtype=torch.long), cond=torch.zeros(1, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="top codes"):
        model(torch.zeros(1, 16, dtype=torch.long), cond=torch.zeros(1, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="pass cond"):
        model(torch.zeros(1, 16, dtype=torch.long))
