"""Tests for vqtok.losses: zeros, monotonicity, masking, gradients and odd lengths."""

import math

import pytest
import torch

from vqtok.losses import MultiResolutionSTFTLoss, image_mse, masked_mean, waveform_l1

SR = 8000


def speechlike(batch: int = 2, length: int = 4000, seed: int = 0) -> torch.Tensor:
    """Harmonic tone with a decaying envelope plus a little noise: ``(B, 1, T)``."""
    gen = torch.Generator().manual_seed(seed)
    t = torch.arange(length) / SR
    f0 = torch.tensor([120.0, 180.0])[:batch, None]
    wave = sum(torch.sin(2 * math.pi * k * f0 * t) / k for k in range(1, 6))
    env = torch.exp(-3 * t)
    return (0.3 * wave * env + 0.01 * torch.randn(batch, length, generator=gen))[:, None, :]


@pytest.fixture(scope="module")
def loss_fn() -> MultiResolutionSTFTLoss:
    return MultiResolutionSTFTLoss(SR)


def test_masked_mean_and_simple_losses() -> None:
    x = torch.tensor([[[1.0, 2.0, 3.0, 100.0]]])
    mask = torch.tensor([[[1.0, 1.0, 1.0, 0.0]]])
    assert masked_mean(x, mask).item() == pytest.approx(2.0)
    assert masked_mean(x).item() == pytest.approx(26.5)
    assert waveform_l1(x + 1, x, mask).item() == pytest.approx(1.0)
    assert waveform_l1(torch.zeros_like(x), x, mask).item() == pytest.approx(2.0)
    img = torch.zeros(2, 1, 4, 5)
    assert image_mse(img + 0.5, img).item() == pytest.approx(0.25)


def test_zero_for_identical_inputs(loss_fn: MultiResolutionSTFTLoss) -> None:
    x = speechlike()
    terms = loss_fn.terms(x, x.clone())
    for name, value in terms.items():
        assert value.item() == 0.0, name
    assert {"loss", "spectral_convergence", "log_mel", "log_mel/128", "spectral_convergence/1024"} <= set(terms)


def test_decreases_as_signal_approaches_target(loss_fn: MultiResolutionSTFTLoss) -> None:
    x = speechlike()
    noise = 0.2 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    losses = [loss_fn(x + a * noise, x).item() for a in (1.0, 0.3, 0.1, 0.01)]
    assert all(v > 0 for v in losses)
    assert losses == sorted(losses, reverse=True)


def test_differences_in_padding_are_ignored(loss_fn: MultiResolutionSTFTLoss) -> None:
    x = speechlike()
    mask = torch.ones_like(x)
    mask[0, :, 3000:] = 0
    mask[1, :, 2500:] = 0
    x_hat = x + (1 - mask) * torch.randn(x.shape, generator=torch.Generator().manual_seed(2))
    assert loss_fn(x_hat, x, mask).item() == 0.0
    assert loss_fn(x_hat, x).item() > 0.1


def test_gradient_flows_and_is_finite(loss_fn: MultiResolutionSTFTLoss) -> None:
    x = speechlike()
    for x_hat in (x.clone().requires_grad_(True), (0.5 * x).requires_grad_(True)):
        loss_fn(x_hat, x).backward()
        assert x_hat.grad is not None and torch.isfinite(x_hat.grad).all()
    # From a near-silent start (an exact zero has |X| = 0, where the magnitude has no gradient).
    x_hat = (1e-3 * torch.randn(x.shape, generator=torch.Generator().manual_seed(3))).requires_grad_(True)
    loss_fn(x_hat, x).backward()
    assert x_hat.grad.abs().sum() > 0


def test_odd_length_and_unbatched_shape(loss_fn: MultiResolutionSTFTLoss) -> None:
    x = speechlike(length=1001)
    y = 0.8 * x
    mask = torch.ones_like(x)
    mask[:, :, 777:] = 0
    assert loss_fn(y, x).item() > 0
    assert torch.isfinite(loss_fn(y, x, mask))
    assert loss_fn(y[:, 0], x[:, 0]).item() == pytest.approx(loss_fn(y, x).item())


def test_fp32_under_autocast(loss_fn: MultiResolutionSTFTLoss) -> None:
    x = speechlike()
    y = (0.5 * x).to(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = loss_fn(y, x)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)


@pytest.mark.parametrize("sample_rate", [8000, 16000, 24000])
def test_no_empty_mel_filters(sample_rate: int, recwarn: pytest.WarningsRecorder) -> None:
    loss = MultiResolutionSTFTLoss(sample_rate)
    assert not [w for w in recwarn if "Empty filters" in str(w.message)]
    for res in loss.resolutions:
        assert (res.mel_basis.max(dim=1).values > 0).all()
