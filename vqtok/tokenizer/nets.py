"""Encoder / Decoder / ResBlock: one implementation for waveforms (dims=1) and images (dims=2)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vqtok.tokenizer.receptive import Interval, input_interval, residual_interval


class HardELU(nn.Module):
    """max(x, -1): ELU's piecewise-linear twin (identity down to ELU's floor -1), as hardtanh is tanh's.

    On one CPU thread it costs ~0.16 ns an element against ELU's ~2.4 (exp), and ELU was a third of the
    speech models' encode and decode time. A model trained with ELU changes little when its ELUs become
    HardELUs (speech-8k on 30 pieces of speech/test: log-mel 0.274 -> 0.323 before any training), so a short
    fine-tune (--init-from with `activation: hard_elu`) makes a fast model of a slow one.
    """

    def forward(self, x: Tensor) -> Tensor:
        return torch.clamp_min(x, -1.0)


ACTIVATIONS = {"elu": nn.ELU, "hard_elu": HardELU, "relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU,
               "leaky_relu": nn.LeakyReLU}


def in_place(layer: nn.Module, x: Tensor) -> Tensor:
    """layer(x), overwriting x when the layer is a HardELU or a ResBlock; for tensors no one else holds."""
    if isinstance(layer, HardELU):
        return x.clamp_min_(-1.0)
    return layer.add_to(x) if isinstance(layer, ResBlock) else layer(x)


def run_layers(layers: nn.Sequential, x: Tensor) -> Tensor:
    """layers(x); without autograd an activation after the first layer overwrites the tensor the layer before it
    made (the decoder's last one, on the full-rate output: the speech models decode 5-10% faster on one thread)."""
    if torch.is_grad_enabled():
        return layers(x)
    for i, layer in enumerate(layers):
        x = in_place(layer, x) if i > 0 else layer(x)
    return x


def activation(name: str) -> nn.Module:
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(f"unknown activation '{name}'; choose one of {', '.join(ACTIVATIONS)}") from None


def _rows(x: Tensor) -> Tensor:
    """(B, C, T) -> (B, C, 1, T) in channels-last memory (a view when x already has channels-last strides)."""
    return x.unsqueeze(2).contiguous(memory_format=torch.channels_last)


class Conv1d(nn.Conv1d):
    """nn.Conv1d (same weights, same state_dict) that on the CPU runs as a 2-D convolution over a channels-last
    (B, C, 1, T) view: oneDNN's kernels for that layout beat its 1-D path on these shapes, and its output keeps
    that layout (B, C, T with stride 1 over C), so the next layer takes it without a copy. On one thread
    (bench/encode.py) the shipped speech models decode ~1.4x faster and speech-8k encodes ~1.3x faster (same
    codes); a CPU training step takes ~10% less. Other devices take nn.Conv1d's path."""

    def forward(self, x: Tensor) -> Tensor:
        if x.device.type != "cpu" or isinstance(self.padding, str) or self.padding_mode != "zeros":
            return super().forward(x)
        if self.in_channels == 1 and self.groups == 1:  # a waveform stem: one GEMM over the unfolded windows
            (k,), (s,), (p,), (d,) = self.kernel_size, self.stride, self.padding, self.dilation
            windows = F.pad(x[:, 0], (p, p)).unfold(1, d * (k - 1) + 1, s)[..., ::d].contiguous()  # (B, T', k)
            flat, weight = windows.flatten(0, 1), self.weight[:, 0].t()  # (B T', k), (k, C)
            y = flat @ weight if self.bias is None else torch.addmm(self.bias, flat, weight)  # (B T', C)
            return y.view(x.shape[0], -1, self.out_channels).transpose(1, 2)  # (B, C, T'), channels-last
        return F.conv2d(_rows(x), self._rows_weight(), self.bias, (1, *self.stride), (0, *self.padding),
                        (1, *self.dilation), self.groups).squeeze(2)

    def _rows_weight(self) -> Tensor:
        """The weight as a channels-last (C_out, C_in, 1, K) tensor. Without autograd the copy is kept until the
        weight changes: block-wise coding (`vqtok encode` / `decode`) runs every layer once per block of audio,
        and remaking the copies each time cost it 5-15% on one thread."""
        if torch.is_grad_enabled():
            return self.weight.unsqueeze(2).contiguous(memory_format=torch.channels_last)
        w = self.weight
        key = (w.data_ptr(), w._version, w.dtype, w.device)  # in-place updates bump _version
        if self.__dict__.get("_rows_key") != key:
            self._rows_cache = w.detach().unsqueeze(2).contiguous(memory_format=torch.channels_last)
            self._rows_key = key
        return self._rows_cache


class ConvTranspose1d(nn.ConvTranspose1d):
    """nn.ConvTranspose1d run like `Conv1d` on the CPU: oneDNN's channels-last transposed convolution is 2-5x
    faster than PyTorch's 1-D one here (which falls back to a slow path and copies its output)."""

    def forward(self, x: Tensor, output_size: list[int] | None = None) -> Tensor:
        if x.device.type != "cpu" or output_size is not None:
            return super().forward(x, output_size)
        return F.conv_transpose2d(_rows(x), self.weight.unsqueeze(2), self.bias, (1, *self.stride),
                                  (0, *self.padding), (0, *self.output_padding), self.groups,
                                  (1, *self.dilation)).squeeze(2)


def conv(dims: int, *args, **kwargs) -> nn.Module:
    return (Conv1d if dims == 1 else nn.Conv2d)(*args, **kwargs)


def conv_transpose(dims: int, *args, **kwargs) -> nn.Module:
    return (ConvTranspose1d if dims == 1 else nn.ConvTranspose2d)(*args, **kwargs)


def max_pool(dims: int, x: Tensor, stride: int) -> Tensor:
    """Max over non-overlapping windows of `stride` along each of the `dims` spatial axes of x (B, C, *S)."""
    return (F.max_pool1d if dims == 1 else F.max_pool2d)(x, stride, stride)


def downsample(dims: int, c_in: int, c_out: int, stride: int) -> nn.Module:
    """Strided conv dividing the length exactly by `stride` (for lengths that are multiples of it)."""
    if stride == 1:
        return conv(dims, c_in, c_out, 3, padding=1)
    # kernel 2s, padding ceil(s/2): out = floor((L + 2*ceil(s/2) - 2s) / s) + 1 = L / s.
    return conv(dims, c_in, c_out, 2 * stride, stride=stride, padding=math.ceil(stride / 2))


def upsample(dims: int, c_in: int, c_out: int, stride: int) -> nn.Module:
    """Transposed conv multiplying the length exactly by `stride` (the inverse of `downsample`)."""
    if stride == 1:
        return conv(dims, c_in, c_out, 3, padding=1)
    pad = math.ceil(stride / 2)
    # out = (L - 1) s - 2 pad + 2s + output_padding = L s when output_padding = 2 pad - s.
    return conv_transpose(dims, c_in, c_out, 2 * stride, stride=stride, padding=pad, output_padding=2 * pad - stride)


class ResBlock(nn.Module):
    """x + conv1(act(conv_k(act(x)))): the VQ-VAE residual unit, dilated for waveforms (EnCodec, Jukebox)."""

    def __init__(self, dims: int, channels: int, dilation: int = 1, act: str = "elu"):
        super().__init__()
        hidden = max(channels // 2, 1)
        self.block = nn.Sequential(
            activation(act),
            conv(dims, channels, hidden, 3, padding=dilation, dilation=dilation),
            activation(act),
            conv(dims, hidden, channels, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        if torch.is_grad_enabled():
            return x + self.block(x)
        # Without autograd the inner activation (run_layers) and the sum write into tensors this block made and no
        # one else holds: on one CPU thread that is 3-5x cheaper than writing new ones (speech-16k encodes ~10%
        # faster, its encoder's full-rate blocks the most). Same numbers either way.
        return run_layers(self.block, x).add_(x)

    def input_interval(self, out: Interval) -> Interval:
        return residual_interval(self.block, out)

    def add_to(self, x: Tensor) -> Tensor:
        """self(x), written into x where it can: without autograd, for an x no one else holds (run_layers after
        its first layer).

        A 1-D block's last (1x1) conv on the CPU's channels-last layout is one GEMM over (T, C) rows: here it
        accumulates straight into x, then its bias is added, so the sum needs no new full-rate tensor and one
        pass less (speech-16k encodes ~8% faster on one thread, the same codes). Rounding differs from self(x)
        by the order of the three terms' sum (~1e-7).
        """
        last = self.block[-1]
        if torch.is_grad_enabled() or not isinstance(last, Conv1d) or last.kernel_size != (1,) or last.bias is None:
            return self(x)
        if last._forward_pre_hooks or last._forward_hooks:  # hooks (batch encoding's masks) see the conv run
            return self(x)
        h = run_layers(self.block[:-1], x)
        xt, ht = x.transpose(1, 2), h.transpose(1, 2)  # (B, T, C): contiguous in the channels-last layout
        if x.device.type != "cpu" or last.groups != 1 or not (xt.is_contiguous() and ht.is_contiguous()):
            return last(h).add_(x)
        rows = xt.view(-1, xt.shape[-1])
        rows.addmm_(ht.reshape(rows.shape[0], -1), last.weight[:, :, 0].t()).add_(last.bias)
        return x

    @property
    def dilation(self) -> int | tuple[int, ...]:
        return self.block[1].dilation

    def to_identity(self) -> None:
        """Zero the last conv: the block passes its input through unchanged (and still learns: the zeroed conv
        gets gradient from the hidden activations)."""
        last = self.block[-1]
        nn.init.zeros_(last.weight)
        if last.bias is not None:
            nn.init.zeros_(last.bias)


def res_stack(dims: int, channels: int, depth: int, dilation_growth: int, act: str) -> list[nn.Module]:
    """`depth` residual blocks with dilations 1, g, g^2, ... (g = 1 for images)."""
    return [ResBlock(dims, channels, dilation_growth**i, act) for i in range(depth)]


class Patchify(nn.Module):
    """(B, C, T) -> (B, C * stride, T / stride): each run of `stride` samples becomes one frame's channels."""

    def __init__(self, stride: int):
        super().__init__()
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        b, c, t = x.shape
        # (B, C, T/s, s) -> (B, C, s, T/s) -> (B, C*s, T/s): channel c*s + j holds sample j of each run
        return x.reshape(b, c, t // self.stride, self.stride).transpose(2, 3).reshape(b, c * self.stride, -1)

    def input_interval(self, out: Interval) -> Interval:  # frame i holds samples [i s, i s + s)
        return out[0] * self.stride, out[1] * self.stride + self.stride - 1


STEMS = ("conv", "patch")


class Encoder(nn.Module):
    """(B, C_in, *S) -> (B, C_out, *S / prod(strides)).

    Stage i: a strided conv to `channels[i]` then `res_depth` residual blocks; channels are meant to
    grow as the resolution drops, where they are cheap. stem "conv": a kernel-7 conv at the input rate first;
    "patch" (waveforms): the first stage's stride folds runs of samples into channels and one kernel-7 conv at
    the reduced rate replaces both the stem and the first strided conv, the two layers that run at the highest
    rates (about a fifth of speech16k.yaml's encoder time on one CPU thread).
    """

    def __init__(
        self,
        dims: int,
        in_channels: int,
        channels: list[int],
        strides: list[int],
        out_channels: int | None,
        res_depth: int = 2,
        dilation_growth: int = 1,
        act: str = "elu",
        stem: str = "conv",
    ):
        super().__init__()
        if len(channels) != len(strides):
            raise ValueError(f"channels {channels} and strides {strides} must have the same length")
        if stem not in STEMS:
            raise ValueError(f"unknown encoder_stem '{stem}'; choose one of {', '.join(STEMS)}")
        if stem == "patch" and dims != 1:
            raise ValueError("encoder_stem 'patch' is for audio (dims 1); images take 'conv'")
        stem_kernel = 7 if dims == 1 else 3
        if stem == "patch":
            layers: list[nn.Module] = [Patchify(strides[0]), conv(dims, in_channels * strides[0], channels[0], 7, padding=3)]
        else:
            layers = [conv(dims, in_channels, channels[0], stem_kernel, padding=stem_kernel // 2)]
        prev = channels[0]
        for i, (c, s) in enumerate(zip(channels, strides)):
            if i > 0 or stem == "conv":
                layers.append(downsample(dims, prev, c, s))
            layers += res_stack(dims, c, res_depth, dilation_growth, act)
            prev = c
        if out_channels is not None:
            layers += [activation(act), conv(dims, prev, out_channels, 3, padding=1)]
        self.net = nn.Sequential(*layers)
        self.stride = math.prod(strides)
        self.out_channels = out_channels if out_channels is not None else prev
        self.stem, self.res_depth, self.num_stages = stem, res_depth, len(channels)

    def forward(self, x: Tensor) -> Tensor:
        return run_layers(self.net, x)

    def input_interval(self, out: Interval) -> Interval:
        return input_interval(self.net, out)

    def parts(self) -> EncoderParts:
        """The layers of `net` grouped as built: stem, then per stage its downsampling conv and residual blocks."""
        layers = list(self.net)
        i = 2 if self.stem == "patch" else 1
        stem, stages = layers[:i], []
        for s in range(self.num_stages):
            down = None if s == 0 and self.stem == "patch" else layers[i]
            i += down is not None
            stages.append(EncoderStage(down, layers[i:i + self.res_depth]))
            i += self.res_depth
        return EncoderParts(stem, stages, layers[i:])


@dataclass
class EncoderStage:
    down: nn.Module | None  # the strided conv (None: the patch stem took this stage's stride)
    blocks: list[nn.Module]  # ResBlocks, dilations 1, g, g^2, ...


@dataclass
class EncoderParts:
    stem: list[nn.Module]  # [conv] or [Patchify, conv]
    stages: list[EncoderStage]
    tail: list[nn.Module]  # [activation, conv to the code dimension] (empty without out_channels)


class Decoder(nn.Module):
    """(B, C_in, *S) -> (B, C_out, *S * prod(strides)); the mirror of `Encoder` with the same lists."""

    def __init__(
        self,
        dims: int,
        in_channels: int,
        channels: list[int],
        strides: list[int],
        out_channels: int,
        res_depth: int = 2,
        dilation_growth: int = 1,
        act: str = "elu",
    ):
        super().__init__()
        if len(channels) != len(strides):
            raise ValueError(f"channels {channels} and strides {strides} must have the same length")
        layers: list[nn.Module] = [conv(dims, in_channels, channels[-1], 3, padding=1)]
        for i in reversed(range(len(channels))):
            layers += res_stack(dims, channels[i], res_depth, dilation_growth, act)
            nxt = channels[i - 1] if i > 0 else channels[0]
            layers.append(upsample(dims, channels[i], nxt, strides[i]))
        out_kernel = 7 if dims == 1 else 3
        layers += [activation(act), conv(dims, channels[0], out_channels, out_kernel, padding=out_kernel // 2)]
        self.net = nn.Sequential(*layers)
        self.stride = math.prod(strides)

    def forward(self, x: Tensor) -> Tensor:
        return run_layers(self.net, x)

    def input_interval(self, out: Interval) -> Interval:
        return input_interval(self.net, out)

    def load_shallower(self, old: Decoder) -> None:
        """Take the weights of `old`, this decoder with fewer residual blocks a stage: its layers are copied in
        order onto the layers of the same kind (blocks of the same dilation); each block beyond them starts as the
        identity, so this decoder computes what `old` does until it is trained."""
        differ = "load_shallower: the decoders differ in more than their residual blocks"
        source = iter(old.net)
        pending = next(source, None)
        for layer in self.net:
            if pending is not None and type(layer) is type(pending) and (
                    not isinstance(layer, ResBlock) or layer.dilation == pending.dilation):
                try:
                    layer.load_state_dict(pending.state_dict())
                except RuntimeError:  # the same layer kind in other sizes
                    raise ValueError(differ) from None
                pending = next(source, None)
            elif isinstance(layer, ResBlock):
                layer.to_identity()
            else:
                raise ValueError(differ)
        if pending is not None:
            raise ValueError("load_shallower: the old decoder has layers this one lacks")
