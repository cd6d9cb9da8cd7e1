"""Training losses: masked waveform L1, image MSE and a multi-resolution STFT / log-mel loss."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence

import librosa
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)

# Magnitudes are clamped before the log, as in DAC's MelSpectrogramLoss (clamp_eps=1e-5, log10).
LOG_CLAMP = 1e-5
# Power is clamped before the square root so the gradient of |X| stays finite where X = 0
# (Parallel WaveGAN's stft() uses the same 1e-7 floor).
POWER_FLOOR = 1e-7


def masked_mean(x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of ``x`` over the elements where ``mask`` is non-zero (all elements if ``mask`` is None).

    ``mask`` broadcasts against ``x`` (e.g. ``x: (B, C, T)``, ``mask: (B, 1, T)``); the denominator
    counts the broadcast mask so every channel of a valid sample is one element.
    """
    if mask is None:
        return x.mean()
    mask = mask.to(x.dtype).expand_as(x)
    return (x * mask).sum() / mask.sum().clamp_min(1.0)


def waveform_l1(x_hat: torch.Tensor, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean absolute error between waveforms ``(B, C, T)``, over valid samples only if ``mask`` is given."""
    return masked_mean((x_hat - x).abs(), mask)


def image_mse(x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Mean squared error between images ``(B, C, H, W)`` (the VQ-VAE reconstruction term, van den Oord 2017)."""
    return F.mse_loss(x_hat, x)


def safe_n_mels(sample_rate: int, n_fft: int, n_mels: int) -> int:
    """Largest number of mel bands <= ``n_mels`` whose filters all have non-zero weights.

    librosa warns "Empty filters detected in mel frequency basis" when the lowest triangles are
    narrower than the FFT bin spacing; such bands are constant zeros (log-mel = log(clamp)), which
    wastes capacity and hides nothing. We shrink ``n_mels`` until every filter touches a bin.
    """
    for candidate in range(n_mels, 0, -1):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            basis = librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=candidate)
        if np.all(basis.max(axis=1) > 0):
            if candidate != n_mels:
                logger.debug("n_fft=%d at %d Hz: n_mels %d -> %d to avoid empty filters",
                             n_fft, sample_rate, n_mels, candidate)
            return candidate
    raise ValueError(f"n_fft={n_fft} is too small for any mel filter at {sample_rate} Hz")


class STFTResolution(nn.Module):
    """One STFT resolution: Hann window and mel basis as buffers, plus the frame-level mask."""

    def __init__(self, sample_rate: int, n_fft: int, hop_length: int, n_mels: int) -> None:
        super().__init__()
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.n_mels = safe_n_mels(sample_rate, n_fft, n_mels)
        mel = librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=self.n_mels)
        self.register_buffer("mel_basis", torch.from_numpy(mel).float(), persistent=False)  # (M, F)
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)  # (n_fft,)

    def magnitude(self, x: torch.Tensor) -> torch.Tensor:
        """Linear magnitude ``(B, F, N)`` of a waveform ``(B, T)``."""
        spec = torch.stft(x, self.n_fft, self.hop_length, window=self.window, center=True,
                          pad_mode="constant", return_complex=True)
        return (spec.real.square() + spec.imag.square()).clamp_min(POWER_FLOOR).sqrt()

    def log_mel(self, mag: torch.Tensor) -> torch.Tensor:
        """log10 mel magnitude ``(B, M, N)`` from a linear magnitude ``(B, F, N)``."""
        mel = torch.einsum("mf,bfn->bmn", self.mel_basis, mag)
        return mel.clamp_min(LOG_CLAMP).log10()

    def frame_mask(self, mask: torch.Tensor) -> torch.Tensor:
        """``(B, 1, N)`` frame mask: a frame is valid if any sample under its window is valid.

        Mirrors ``torch.stft(center=True)``: frame n covers samples [n*hop - n_fft/2, n*hop + n_fft/2).
        """
        padded = F.pad(mask, (self.n_fft // 2, self.n_fft // 2))  # (B, 1, T + n_fft)
        return F.max_pool1d(padded, self.n_fft, self.hop_length)  # (B, 1, N)


class MultiResolutionSTFTLoss(nn.Module):
    """Spectral convergence + log-mel L1, averaged over several STFT resolutions.

    Spectral convergence ``||S - S_hat||_F / ||S||_F`` per item is from Parallel WaveGAN
    (Yamamoto et al. 2020, eq. 2); the log10-mel L1 with one mel size per window follows the
    multi-scale mel loss of EnCodec (Defossez et al. 2022, sec. 3.4) and DAC (Kumar et al. 2023).
    The defaults (windows of 128..1024 samples, hop = window/4, n_mels = window/8) cover 16-128 ms
    at 8 kHz and 5-43 ms at 24 kHz, the range those papers use for speech, and give no empty mel
    filter between 8 and 24 kHz.

    Everything is computed in fp32 with autocast disabled: the STFT and the log are not safe in
    half precision. With a ``mask (B, 1, T)`` padded samples are zeroed in both signals before the
    STFT and frames lying wholly in the padding are left out of the log-mel mean.
    """

    def __init__(
        self,
        sample_rate: int,
        fft_sizes: Sequence[int] = (128, 256, 512, 1024),
        hop_divisor: int = 4,
        mels_divisor: int = 8,
        sc_weight: float = 1.0,
        mel_weight: float = 1.0,
    ) -> None:
        super().__init__()
        self.sample_rate = sample_rate
        self.sc_weight = sc_weight
        self.mel_weight = mel_weight
        self.resolutions = nn.ModuleList(
            STFTResolution(sample_rate, n, n // hop_divisor, n // mels_divisor) for n in fft_sizes
        )

    def terms(self, x_hat: torch.Tensor, x: torch.Tensor,
              mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Per-term losses for logging: ``loss``, ``spectral_convergence``, ``log_mel`` and per resolution.

        ``x_hat, x: (B, 1, T)`` (or ``(B, T)``); ``mask: (B, 1, T)`` with 1 on valid samples.
        """
        with torch.autocast(device_type=x.device.type, enabled=False):
            x_hat, x = x_hat.float(), x.float()
            if mask is not None:
                mask = mask.float().reshape(x.shape[0], 1, -1)  # (B, 1, T)
                x_hat = x_hat * mask.reshape(x_hat.shape)
                x = x * mask.reshape(x.shape)
            x_hat = x_hat.reshape(x_hat.shape[0], -1)  # (B, T): mono
            x = x.reshape(x.shape[0], -1)
            out: dict[str, torch.Tensor] = {}
            for res in self.resolutions:
                sc, mel = self._one_resolution(res, x_hat, x, mask)
                out[f"spectral_convergence/{res.n_fft}"] = sc
                out[f"log_mel/{res.n_fft}"] = mel
            n = len(self.resolutions)
            out["spectral_convergence"] = sum(out[f"spectral_convergence/{r.n_fft}"] for r in self.resolutions) / n
            out["log_mel"] = sum(out[f"log_mel/{r.n_fft}"] for r in self.resolutions) / n
            out["loss"] = self.sc_weight * out["spectral_convergence"] + self.mel_weight * out["log_mel"]
        return out

    @staticmethod
    def _one_resolution(res: STFTResolution, x_hat: torch.Tensor, x: torch.Tensor,
                        mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        mag_hat, mag = res.magnitude(x_hat), res.magnitude(x)  # (B, F, N)
        # Per-item ratio so a loud item does not drown a quiet one. vector_norm has a zero (not NaN)
        # gradient at 0, so identical inputs give exactly 0 and a finite gradient.
        num = torch.linalg.vector_norm(mag - mag_hat, dim=(1, 2))
        den = torch.linalg.vector_norm(mag, dim=(1, 2)).clamp_min(POWER_FLOOR)
        sc = (num / den).mean()
        diff = (res.log_mel(mag) - res.log_mel(mag_hat)).abs()  # (B, M, N)
        frame_mask = None if mask is None else res.frame_mask(mask)  # (B, 1, N)
        return sc, masked_mean(diff, frame_mask)

    def forward(self, x_hat: torch.Tensor, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Scalar loss ``sc_weight * spectral_convergence + mel_weight * log_mel``."""
        return self.terms(x_hat, x, mask)["loss"]
