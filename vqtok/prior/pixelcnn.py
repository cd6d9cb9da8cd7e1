"""Gated PixelCNN prior over 2D code maps, with class and spatial (upper-level) conditioning."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from vqtok.prior.sampling import PixelCNNSteps, sample_pixelcnn

# Reference: van den Oord et al. 2016, "Conditional Image Generation with PixelCNN Decoders"
# (arXiv:1606.05328), called [vdO16] below. Spatial conditioning on an upper code map follows
# VQ-VAE-2 (Razavi et al. 2019).
#
# Causality without blind spot, by construction (no masked kernels, only padded/cropped convolutions):
#   vertical stack   v: a (k//2 + 1) x k kernel over rows i-p..i, columns j-p..j+p   (p = k // 2).
#                       v[i] therefore depends on rows <= i of the input and nothing below.
#   vertical -> horizontal: v is shifted down one row before it enters the horizontal stack, so the
#                       horizontal stack at row i only ever sees rows < i through it ([vdO16] Fig. 1).
#   horizontal stack h: a 1 x (p + 1) kernel over columns j-p..j of the same row; in the first layer the
#                       kernel is 1 x p over columns j-p..j-1 (mask 'A': the current code is excluded),
#                       and no residual is taken around it (its input holds the current code).
# Hence logits[i, j] depend on every code before (i, j) in raster order (given enough layers) and on no other.


@dataclass
class PixelCNNConfig:
    """Everything that builds a `GatedPixelCNN` (the JSON a checkpoint stores)."""

    num_codes: int
    channels: int = 128
    layers: int = 12
    kernel_size: int = 7
    num_classes: int | None = None
    cond_codes: int | None = None
    cond_channels: int = 64
    cond_layers: int = 2
    null_class: bool = False  # one more class row, index num_classes: the unconditional model (guidance)


def _gate(pre: Tensor, bias: Tensor | None) -> Tensor:
    """Gated activation unit, [vdO16] eq. 2/4: tanh(W_f * x + V_f h) * sigmoid(W_g * x + V_g h)."""
    if bias is not None:
        pre = pre + bias
    f, g = pre.chunk(2, dim=1)  # (B, 2C, H, W) -> 2 x (B, C, H, W)
    return torch.tanh(f) * torch.sigmoid(g)


class _CondResBlock(nn.Module):
    """Non-causal residual block over the upper-level code map, which is fully known when sampling."""

    def __init__(self, channels: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.net(x)


class GatedLayer(nn.Module):
    """One gated layer with a vertical and a horizontal stack ([vdO16] Fig. 2), without blind spot."""

    def __init__(
        self, channels: int, kernel_size: int, first: bool, num_classes: int | None, cond_channels: int | None
    ):
        # num_classes here counts the null class too when the network has one
        super().__init__()
        c, p = channels, kernel_size // 2
        self.first, self.pad = first, p
        self.v_conv = nn.Conv2d(c, 2 * c, (p + 1, kernel_size))  # rows i-p..i, columns j-p..j+p
        self.v_to_h = nn.Conv2d(2 * c, 2 * c, 1)
        # mask 'A' in the first layer (columns j-p..j-1), mask 'B' afterwards (columns j-p..j)
        self.h_conv = nn.Conv2d(c, 2 * c, (1, p if first else p + 1))
        self.h_res = nn.Conv2d(c, c, 1)
        self.h_skip = nn.Conv2d(c, c, 1)
        # [vdO16] eq. 4: a per-class bias V^T h in every gate (h one-hot, so V is an embedding of size 2C)
        self.class_bias = nn.Embedding(num_classes, 2 * c) if num_classes else None
        # [vdO16] eq. 5: a spatial bias V * s(y) from the upsampled conditioning map, a 1x1 convolution
        self.cond_bias = nn.Conv2d(cond_channels, 2 * c, 1) if cond_channels else None

    def gate_bias(self, labels: Tensor | None, cond_features: Tensor | None) -> Tensor | None:
        """Bias added in both gates: (B, 2C, 1, 1) from the class, (B, 2C, H, W) with a conditioning map."""
        bias = None
        if self.class_bias is not None:
            bias = rearrange(self.class_bias(labels), "b c -> b c 1 1")
        if self.cond_bias is not None:
            spatial = self.cond_bias(cond_features)
            bias = spatial if bias is None else bias + spatial
        return bias

    def vertical(self, v: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, 2C, H, W) pre-activations; row i sees input rows i-p..i only."""
        p = self.pad
        return self.v_conv(F.pad(v, (p, p, p, 0)))  # pad (left, right, top, bottom)

    def to_horizontal(self, v_pre: Tensor) -> Tensor:
        """Down-shift by one row, so row i of the horizontal stack sees vertical rows < i ([vdO16] Fig. 1)."""
        return self.v_to_h(F.pad(v_pre, (0, 0, 1, 0))[:, :, :-1])  # (B, 2C, H, W), row 0 sees only zeros

    def horizontal(self, h: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, 2C, H, W); (i, j) sees columns j-p..j-1 (first layer) or j-p..j of row i."""
        width = h.shape[-1]
        return self.h_conv(F.pad(h, (self.pad, 0)))[..., :width]


class GatedPixelCNN(nn.Module):
    """Gated PixelCNN over (B, H, W) code maps; logits (B, K, H, W) where logits[:, :, i, j] predicts
    codes[:, i, j] from the codes before it in raster order (and from labels / cond, seen in full).

    - ``num_classes``: class-conditional prior (a learned bias per class in every gate).
    - ``null_class``: one more class, index ``num_classes``, that stands for "no class" (classifier-free
      guidance, Ho & Salimans 2022); trained when labels are dropped to it (see `vqtok.prior.guidance`).
    - ``cond_codes``: conditioned on an upper-level code map (B, h, w) with H/h and W/w integers, e.g. the
      VQ-VAE-2 bottom prior (top 7x7 -> bottom 14x14). The map is embedded, passed through ``cond_layers``
      non-causal residual blocks, upsampled (nearest) to (H, W) and projected into every gate.
    """

    # What a prior's layout asks of its network (vqtok.prior.layout): a PixelCNN reads code maps only, takes an
    # upper level as a map (a VQ-VAE-2's bottom prior), and its maps may share a batch bit-exactly, PyTorch's native
    # convolution running each map through its own GEMM (vqtok.prior.coding).
    reads_sequences = False
    conditions_on_maps = True
    batchable = True

    def __init__(
        self,
        num_codes: int,
        channels: int = 128,
        layers: int = 12,
        kernel_size: int = 7,
        num_classes: int | None = None,
        cond_codes: int | None = None,
        cond_channels: int = 64,
        cond_layers: int = 2,
        null_class: bool = False,
    ):
        super().__init__()
        if null_class and not num_classes:
            raise ValueError("null_class needs num_classes: it is the extra class of classifier-free guidance")
        if kernel_size < 3 or kernel_size % 2 == 0:
            raise ValueError(
                f"kernel_size must be odd and >= 3 (the first layer sees k // 2 codes), got {kernel_size}"
            )
        if layers < 1:
            raise ValueError(f"layers must be >= 1, got {layers}")
        self.config = PixelCNNConfig(
            num_codes, channels, layers, kernel_size, num_classes, cond_codes, cond_channels, cond_layers, null_class
        )
        rows = num_classes + int(null_class) if num_classes else None  # class bias rows
        self.embedding = nn.Embedding(num_codes, channels)
        cond_in = cond_channels if cond_codes else None
        self.gated = nn.ModuleList(
            GatedLayer(channels, kernel_size, first=(i == 0), num_classes=rows, cond_channels=cond_in)
            for i in range(layers)
        )
        if cond_codes:
            self.cond_embedding = nn.Embedding(cond_codes, cond_channels)
            self.cond_net = nn.Sequential(*(_CondResBlock(cond_channels) for _ in range(cond_layers)))
        # Output head: ReLU -> 1x1 -> ReLU -> 1x1 to K logits ([vdO16] Fig. 2 / PixelCNN, Sec. 2)
        self.head = nn.Sequential(
            nn.ReLU(), nn.Conv2d(channels, channels, 1), nn.ReLU(), nn.Conv2d(channels, num_codes, 1)
        )

    @classmethod
    def from_config(cls, config: PixelCNNConfig) -> GatedPixelCNN:
        return cls(**asdict(config))

    @property
    def num_codes(self) -> int:
        return self.config.num_codes

    # --- building blocks (also used by the raster sampler to avoid recomputing the vertical stack) ---

    def embed(self, codes: Tensor) -> Tensor:
        """(B, H, W) int64 -> (B, C, H, W)."""
        return rearrange(self.embedding(codes), "b h w c -> b c h w")

    def encode_cond(self, cond: Tensor, shape: tuple[int, int]) -> Tensor:
        """Upper-level codes (B, h, w) -> features (B, Cc, H, W), nearest-upsampled by (H/h, W/w)."""
        if not self.config.cond_codes:
            raise ValueError("this GatedPixelCNN has no spatial conditioning (cond_codes=None)")
        (height, width), (h, w) = shape, cond.shape[-2:]
        if height % h or width % w:
            raise ValueError(
                f"conditioning map {h}x{w} must divide the code map {height}x{width} by an integer factor "
                f"(e.g. 7x7 -> 14x14)"
            )
        x = rearrange(self.cond_embedding(cond), "b h w c -> b c h w")
        x = self.cond_net(x)
        # nearest upsampling: (B, Cc, h, w) -> (B, Cc, h * fh, w * fw)
        return x.repeat_interleave(height // h, dim=2).repeat_interleave(width // w, dim=3)

    def gate_biases(self, labels: Tensor | None, cond_features: Tensor | None) -> list[Tensor | None]:
        """Per-layer gate bias from class labels (B,) and conditioning features (B, Cc, H, W)."""
        return [layer.gate_bias(labels, cond_features) for layer in self.gated]

    def vertical_stack(self, x: Tensor, biases: list[Tensor | None]) -> list[Tensor]:
        """Embedded codes (B, C, H, W) -> per-layer input to the horizontal stack, each (B, 2C, H, W).

        Row i of every output depends on rows < i of x only, so it can be computed once per row when sampling.
        """
        v, context = x, []
        for layer, bias in zip(self.gated, biases):
            pre = layer.vertical(v)
            context.append(layer.to_horizontal(pre))
            v = _gate(pre, bias)
        return context

    def horizontal_stack(self, x: Tensor, context: list[Tensor], biases: list[Tensor | None]) -> Tensor:
        """Embedded codes (B, C, H, W), vertical context and biases -> logits (B, K, H, W).

        Only sees x along rows, so it may be run on a single row (and its column prefix) of the map.
        """
        h, skip = x, 0
        for layer, ctx, bias in zip(self.gated, context, biases):
            gated = _gate(layer.horizontal(h) + ctx, bias)
            out = layer.h_res(gated)
            # residual connection ([vdO16] Fig. 2), except around the first layer,
            # whose input holds the current code
            h = out if layer.first else h + out
            skip = skip + layer.h_skip(gated)
        return self.head(skip)

    def check_conditioning(self, labels: Tensor | None, cond: Tensor | None) -> None:
        """Raise a ValueError saying what to pass when labels / cond do not fit this model."""
        num_classes, cond_codes = self.config.num_classes, self.config.cond_codes
        name = type(self).__name__
        if num_classes and labels is None:
            raise ValueError(f"this {name} is class-conditional (num_classes={num_classes}): pass labels")
        if not num_classes and labels is not None:
            raise ValueError(f"this {name} has no class conditioning (num_classes=None); pass labels=None")
        if cond_codes and cond is None:
            raise ValueError(f"this {name} is conditioned on a code map (cond_codes={cond_codes}): pass cond")
        if not cond_codes and cond is not None:
            raise ValueError(f"this {name} has no spatial conditioning (cond_codes=None); pass cond=None")

    def forward(self, codes: Tensor, labels: Tensor | None = None, cond: Tensor | None = None) -> Tensor:
        """codes (B, H, W) int64, labels (B,) | None, cond (B, h, w) | None -> logits (B, K, H, W)."""
        self.check_conditioning(labels, cond)
        features = self.encode_cond(cond, codes.shape[-2:]) if cond is not None else None
        biases = self.gate_biases(labels, features)
        x = self.embed(codes)
        return self.horizontal_stack(x, self.vertical_stack(x, biases), biases)

    # --- a code map as a prior reads it (vqtok.prior.layout.MapLayout) ---

    def map_logits(self, codes: Tensor, labels: Tensor | None = None, cond: Tensor | None = None) -> Tensor:
        """codes (B, H, W) -> logits (B, H, W, K), the classes last."""
        return rearrange(self(codes, labels, cond), "b k h w -> b h w k")

    def sample_map(self, n: int, shape: tuple[int, int], labels: Tensor | None = None, cond: Tensor | None = None,
                   **options) -> Tensor:
        """n maps (n, H, W) drawn in raster order by `sample_pixelcnn` (options: temperature, top_k, top_p,
        generator, batch_size, guidance)."""
        return sample_pixelcnn(self, n, shape, labels, cond, **options)

    def map_steps(self, batch: int, shape: tuple[int, int], labels: Tensor | None = None,
                  cond: Tensor | None = None) -> PixelCNNSteps:
        """The incremental path over `batch` maps of `shape`, one code at a time in raster order (entropy coding)."""
        return PixelCNNSteps(self, batch, shape, labels, cond)
