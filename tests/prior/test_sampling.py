"""Tests for sampling: logit filtering, RNG use, KV cache vs recompute, PixelCNN fast loop, NLL helpers."""

import math

import pytest
import torch
from einops import rearrange

from vqtok.prior import (
    CausalTransformer,
    GatedPixelCNN,
    draw,
    filter_logits,
    nll_bits,
    nll_nats,
    sample_pixelcnn,
    sample_transformer,
)


def _seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _kept(logits: torch.Tensor) -> list[int]:
    return torch.isfinite(logits).nonzero().flatten().tolist()


def test_filter_logits_numbers():
    logits = torch.tensor([0.5, 0.3, 0.15, 0.05]).log()
    assert _kept(filter_logits(logits, top_k=2)) == [0, 1]
    assert _kept(filter_logits(logits, top_p=0.45)) == [0]  # the most likely code alone reaches p
    assert _kept(filter_logits(logits, top_p=0.6)) == [0, 1]
    assert _kept(filter_logits(logits, top_p=0.85)) == [0, 1, 2]
    assert _kept(filter_logits(logits, top_p=1.0)) == [0, 1, 2, 3]
    assert _kept(filter_logits(logits, temperature=0.0)) == [0]
    # top-k then nucleus on what is left (renormalised 0.625, 0.375)
    assert _kept(filter_logits(logits, top_k=2, top_p=0.6)) == [0]
    # temperature 2 takes the square root of the probabilities before renormalising
    probs = filter_logits(logits, temperature=2.0).softmax(-1)
    expected = torch.tensor([0.5, 0.3, 0.15, 0.05]).sqrt()
    torch.testing.assert_close(probs, expected / expected.sum())
    # batched rows are filtered independently
    rows = torch.stack([logits, logits.flip(0)])
    assert filter_logits(rows, top_k=1).isfinite().nonzero().tolist() == [[0, 0], [1, 3]]


def test_draw_respects_filtered_codes_and_seed():
    logits = filter_logits(torch.randn(2000, 6), top_k=2)
    codes = draw(logits, torch.Generator().manual_seed(0))
    assert codes.shape == (2000,) and codes.dtype == torch.int64
    assert torch.isfinite(logits.gather(1, codes[:, None])).all()
    again = draw(logits, torch.Generator().manual_seed(0))
    assert torch.equal(codes, again)
    # frequencies follow the probabilities: code 0 with p = 0.8
    two = torch.tensor([[0.8, 0.2]]).log().expand(20000, 2)
    share = (draw(two, torch.Generator().manual_seed(1)) == 0).float().mean().item()
    assert share == pytest.approx(0.8, abs=0.015)


def test_nll_helpers_against_hand_computation():
    logits = torch.tensor([[[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]]])  # (B=1, T=2, K=3)
    targets = torch.tensor([[0, 2]])
    expected = -(logits.log_softmax(-1)[0, 0, 0] + logits.log_softmax(-1)[0, 1, 2]) / 2
    assert nll_nats(logits, targets).item() == pytest.approx(expected.item(), rel=1e-6)
    assert nll_bits(logits, targets).item() == pytest.approx(expected.item() / math.log(2), rel=1e-6)
    maps = rearrange(logits, "b (h w) k -> b k h w", h=1)  # the PixelCNN layout (B, K, H, W)
    map_targets = rearrange(targets, "b (h w) -> b h w", h=1)
    assert nll_nats(maps, map_targets).item() == pytest.approx(expected.item(), rel=1e-6)
    square = torch.zeros(2, 5, 5)  # T == K: the default layout (B, T, K) still applies
    zeros = torch.zeros(2, 5, dtype=torch.long)
    assert nll_bits(square, zeros).item() == pytest.approx(math.log2(5), rel=1e-6)
    with pytest.raises(ValueError, match="do not match"):
        nll_nats(torch.zeros(2, 4, 3), torch.zeros(2, 3, dtype=torch.long))


@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"labels": True},
        {"cond": True, "top_k": 5},
        {"labels": True, "cond": True, "top_p": 0.8, "temperature": 0.7},
        {"labels": True, "top_k": 8, "top_p": 0.9, "batch_size": 2},
        {"labels": True, "cond": True, "class_bias": True},
    ],
)
def test_kv_cache_sampling_equals_full_recompute(settings):
    torch.manual_seed(0)
    labels = settings.get("labels")
    cond = settings.get("cond")
    model = CausalTransformer(
        23, dim=32, layers=2, heads=4, max_len=24, num_classes=4 if labels else None,
        cond_codes=6 if cond else None, cond_ratio=4 if cond else None,
        class_bias=settings.get("class_bias", False),
    )
    kwargs = {k: v for k, v in settings.items() if k not in ("labels", "cond", "class_bias")}
    kwargs["labels"] = torch.tensor([0, 1, 2, 3, 1]) if labels else None
    kwargs["cond"] = torch.randint(0, 6, (5, 6)) if cond else None
    cached = sample_transformer(model, 5, 24, generator=_seeded(7), use_cache=True, **kwargs)
    full = sample_transformer(model, 5, 24, generator=_seeded(7), use_cache=False, **kwargs)
    assert cached.shape == (5, 24) and cached.dtype == torch.int64
    assert torch.equal(cached, full)
    assert len(cached.unique()) > 3  # really sampled, not a constant


def test_transformer_greedy_sampling_is_the_argmax_chain():
    torch.manual_seed(0)
    model = CausalTransformer(9, dim=16, layers=1, heads=2, max_len=12, num_classes=2).train()
    codes = sample_transformer(model, 2, 12, labels=torch.tensor([0, 1]), temperature=0.0)
    assert model.training  # the model's mode is restored
    model.eval()
    logits = model(codes, torch.tensor([0, 1]))  # teacher forcing on the sampled chain
    assert torch.equal(logits.argmax(-1), codes)


def _naive_pixelcnn_sampler(model, n, shape, labels, cond, generator, **filters):
    """Reference raster loop: a full forward pass for every code."""
    codes = torch.zeros(n, *shape, dtype=torch.long)
    with torch.no_grad():
        for i in range(shape[0]):
            for j in range(shape[1]):
                logits = model(codes, labels, cond)[:, :, i, j]
                codes[:, i, j] = draw(filter_logits(logits, **filters), generator)
    return codes


@pytest.mark.parametrize(
    "shape, cond_shape, num_classes, filters",
    [
        ((7, 7), None, None, {}),
        ((8, 6), (4, 3), 3, {"top_k": 6, "top_p": 0.9}),
        ((4, 4), (2, 2), None, {"temperature": 0.8}),
        ((5, 4), None, 3, {}),  # class bias alone: (B, 2C, 1, 1), broadcast over every row and column
    ],
)
def test_pixelcnn_sampler_equals_full_forward_loop(shape, cond_shape, num_classes, filters):
    torch.manual_seed(0)
    model = GatedPixelCNN(
        20, channels=16, layers=3, kernel_size=5, num_classes=num_classes,
        cond_codes=5 if cond_shape else None, cond_channels=8,
    ).eval()
    n = 3
    labels = torch.tensor([0, 2, 1]) if num_classes else None
    cond = torch.randint(0, 5, (n, *cond_shape)) if cond_shape else None
    fast = sample_pixelcnn(model, n, shape, labels, cond, generator=_seeded(3), **filters)
    slow = _naive_pixelcnn_sampler(model, n, shape, labels, cond, _seeded(3), **filters)
    assert fast.shape == (n, *shape) and fast.dtype == torch.int64
    assert torch.equal(fast, slow)
    chunked = sample_pixelcnn(model, n, shape, labels, cond, generator=_seeded(3), batch_size=3, **filters)
    assert torch.equal(chunked, fast)


def test_pixelcnn_sampling_follows_a_peaked_model():
    """A model whose head always favours code 4 samples (almost) only 4s."""
    model = GatedPixelCNN(8, channels=8, layers=2, kernel_size=3)
    last = model.head[-1]
    torch.nn.init.zeros_(last.weight)
    with torch.no_grad():
        last.bias.copy_(torch.tensor([0.0, 0, 0, 0, 10, 0, 0, 0]))
    codes = sample_pixelcnn(model, 4, (3, 5), generator=torch.Generator().manual_seed(0), top_k=1)
    assert torch.all(codes == 4)


def test_sampler_rejects_bad_conditioning():
    model = GatedPixelCNN(8, channels=8, layers=1, kernel_size=3, num_classes=2)
    with pytest.raises(ValueError, match="class-conditional"):
        sample_pixelcnn(model, 2, (3, 3))
    with pytest.raises(ValueError, match="batch size"):
        sample_pixelcnn(model, 2, (3, 3), labels=torch.tensor([0, 1, 1]))
