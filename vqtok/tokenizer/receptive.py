"""Receptive fields along time: the input indices an output range of a module depends on, layer by layer.

torch's own layers (Conv1d, ConvTranspose1d, Sequential, elementwise leaves) have their rules here; any other
module states its own with an `input_interval(out)` method, so a new layer or decoder head brings its rule with
it (streaming.py computes block contexts from these).
"""

from __future__ import annotations

from torch import nn

Interval = tuple[int, int]  # inclusive [lo, hi] of indices


def input_interval(module: nn.Module, out: Interval) -> Interval:
    """Indices of `module`'s input that output indices [lo, hi] depend on (1-D, along time). Border padding is
    ignored (it only narrows the range)."""
    own = getattr(module, "input_interval", None)
    if own is not None:
        return own(out)
    lo, hi = out
    if isinstance(module, nn.Sequential):
        for layer in reversed(module):
            lo, hi = input_interval(layer, (lo, hi))
        return lo, hi
    if isinstance(module, nn.ConvTranspose1d):
        (s,), (k,), (d,), (p,) = module.stride, module.kernel_size, module.dilation, module.padding
        # output o = i s - p + j d for tap j in [0, k): i ranges over ceil((o + p - d(k-1)) / s) .. floor((o + p) / s)
        return -((-(lo + p - d * (k - 1))) // s), (hi + p) // s
    if isinstance(module, nn.Conv1d):
        (s,), (k,), (d,), (p,) = module.stride, module.kernel_size, module.dilation, module.padding
        return lo * s - p, hi * s - p + d * (k - 1)
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        raise ValueError("receptive fields are computed for 1-D (audio) tokenizers only")
    if len(list(module.children())) == 0:  # activations and other elementwise layers
        return lo, hi
    raise TypeError(f"no receptive-field rule for {type(module).__name__}: give it an input_interval(out) method "
                    "(vqtok/tokenizer/receptive.py)")


def residual_interval(branch: nn.Module, out: Interval) -> Interval:
    """x + branch(x): the union of both paths."""
    lo, hi = input_interval(branch, out)
    return min(out[0], lo), max(out[1], hi)
