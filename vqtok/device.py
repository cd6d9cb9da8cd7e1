"""The one place that picks the device and the autocast precision."""

from __future__ import annotations

import contextlib
import os

import torch

from vqtok.errors import VqtokError


def pick_device(name: str = "auto") -> torch.device:
    """'auto' -> CUDA when present, else CPU; the environment variable VQTOK_DEVICE, when set, names what 'auto'
    means instead (VQTOK_DEVICE=cpu keeps a GPU machine's runs on the CPU). Under torchrun each rank takes
    cuda:LOCAL_RANK."""
    if name == "auto" and os.environ.get("VQTOK_DEVICE", "auto") != "auto":
        name = os.environ["VQTOK_DEVICE"]
    if name == "auto" and not torch.cuda.is_available():
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise VqtokError(f"device '{name}' requested but CUDA is not available; use --device cpu")
    if name in ("auto", "cuda"):  # no index: this rank's GPU under torchrun, else the first
        return _gpu(int(os.environ.get("LOCAL_RANK", 0)), "LOCAL_RANK")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise VqtokError(f"unknown device '{name}'; use auto, cpu, cuda or cuda:N") from None
    return _gpu(device.index or 0, name) if device.type == "cuda" else device


def _gpu(index: int, what: str) -> torch.device:
    """cuda:index, or a one-line error where the machine has fewer GPUs (torchrun started more ranks than it has:
    NCCL would otherwise wait for the missing rank until its timeout)."""
    count = torch.cuda.device_count()
    if index >= count:
        raise VqtokError(f"{what} asks for GPU {index}, but this machine has {count}: start torchrun with "
                         f"--nproc_per_node={count} at most, or train on the CPU (train.device=cpu)")
    return torch.device("cuda", index)


def autocast(device: torch.device, precision: str = "auto"):
    """bf16 autocast on CUDA by default, plain fp32 on CPU. The quantizer opts out internally."""
    if precision not in ("auto", "fp32", "bf16"):
        raise VqtokError(f"unknown precision '{precision}'; choose auto, fp32 or bf16")
    use_bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    if not use_bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
