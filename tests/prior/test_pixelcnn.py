"""Tests for the Gated PixelCNN prior: raster causality without blind spot, conditioning, NLL, overfitting."""

import math

import pytest
import torch

from vqtok.prior import GatedPixelCNN, nll_bits, nll_nats


def _dependencies(model: GatedPixelCNN, codes, labels=None, cond=None) -> torch.Tensor:
    """(HW, HW) bool: entry [i, j] is True when logits at raster position i have a nonzero gradient
    with respect to the embedding of the code at raster position j."""
    captured = {}

    def leaf(module, inputs, output):  # replace the embedding output by a leaf we can differentiate against
        captured["x"] = output.detach().requires_grad_(True)
        return captured["x"]

    handle = model.embedding.register_forward_hook(leaf)
    try:
        logits = model(codes, labels, cond)  # (B, K, H, W)
    finally:
        handle.remove()
    height, width = codes.shape[-2:]
    weights = torch.randn_like(logits)  # random projection: no accidental cancellation across the K logits
    rows = []
    for i in range(height * width):
        r, c = divmod(i, width)
        probe = (logits[:, :, r, c] * weights[:, :, r, c]).sum()
        (grad,) = torch.autograd.grad(probe, captured["x"], retain_graph=True)
        rows.append((grad != 0).any(dim=-1).any(dim=0).flatten())  # (B, H, W, C) -> (HW,)
    return torch.stack(rows)


@pytest.mark.parametrize(
    "shape, cond_shape, num_classes",
    [((7, 7), None, None), ((14, 14), (7, 7), None), ((8, 8), (4, 4), 3), ((5, 9), None, 2)],
)
def test_raster_causal_without_blind_spot(shape, cond_shape, num_classes):
    torch.manual_seed(0)
    model = GatedPixelCNN(
        11, channels=8, layers=5, kernel_size=7, num_classes=num_classes,
        cond_codes=5 if cond_shape else None, cond_channels=4, cond_layers=1,
    ).double()
    codes = torch.randint(0, 11, (1, *shape))
    labels = torch.tensor([1]) if num_classes else None
    cond = torch.randint(0, 5, (1, *cond_shape)) if cond_shape else None
    deps = _dependencies(model, codes, labels, cond)
    n = shape[0] * shape[1]
    expected = torch.ones(n, n, dtype=torch.bool).tril(-1)  # every earlier position, nothing at or after i
    missing = (expected & ~deps).nonzero().tolist()
    leaking = (deps & ~expected).nonzero().tolist()
    assert not leaking, f"logits depend on current/future codes (i, j): {leaking[:5]}"
    assert not missing, f"blind spot: logits ignore earlier codes (i, j): {missing[:5]}"


def test_uniform_logits_give_log2_k_bits():
    model = GatedPixelCNN(512, channels=8, layers=2, kernel_size=3)
    last = model.head[-1]
    torch.nn.init.zeros_(last.weight)
    torch.nn.init.zeros_(last.bias)
    codes = torch.randint(0, 512, (3, 7, 5))
    logits = model(codes)
    assert logits.shape == (3, 512, 7, 5)
    assert nll_bits(logits, codes).item() == pytest.approx(9.0, abs=1e-6)
    assert nll_nats(logits, codes).item() == pytest.approx(math.log(512), abs=1e-6)


def test_class_and_spatial_conditioning_change_logits():
    torch.manual_seed(0)
    model = GatedPixelCNN(
        16, channels=8, layers=2, kernel_size=3, num_classes=4,
        cond_codes=6, cond_channels=4
    )
    codes = torch.randint(0, 16, (2, 8, 8))
    cond = torch.randint(0, 6, (2, 4, 4))
    labels = torch.tensor([0, 1])
    base = model(codes, labels, cond)
    other_class = model(codes, torch.tensor([2, 3]), cond)
    other_map = model(codes, labels, (cond + 1) % 6)
    assert (base - other_class).abs().amax() > 1e-3
    assert (base - other_map).abs().amax() > 1e-3
    # the conditioning map is seen in full: even the first position, which sees no code, depends on it
    assert (base[:, :, 0, 0] - other_map[:, :, 0, 0]).abs().amax() > 1e-4
    assert (base[:, :, 0, 0] - other_class[:, :, 0, 0]).abs().amax() > 1e-4


def test_conditioning_errors_are_explicit():
    model = GatedPixelCNN(
        16, channels=8, layers=1, kernel_size=3, num_classes=4, cond_codes=6, cond_channels=4
    )
    codes = torch.zeros(1, 8, 8, dtype=torch.long)
    with pytest.raises(ValueError, match="class-conditional"):
        model(codes, None, torch.zeros(1, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="integer factor"):
        model(codes, torch.tensor([0]), torch.zeros(1, 3, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="odd"):
        GatedPixelCNN(16, kernel_size=4)


def test_overfits_a_handful_of_maps():
    torch.manual_seed(0)
    maps = torch.randint(0, 32, (4, 7, 7))
    maps[:, 0, 0] = torch.arange(4)  # the first code (seen with no context) tells the maps apart
    model = GatedPixelCNN(32, channels=16, layers=3, kernel_size=5)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(100):
        loss = nll_nats(model(maps), maps)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    # floor: the first code is uniform over 4 maps, log(4) / 49 = 0.028 nats per code
    assert nll_nats(model(maps), maps).item() < 0.1
