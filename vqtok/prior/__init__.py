"""Stage 2: autoregressive priors over tokenizer codes."""

from vqtok.prior.pixelcnn import GatedPixelCNN, PixelCNNConfig
from vqtok.prior.sampling import (
    draw,
    filter_logits,
    nll_bits,
    nll_nats,
    sample_pixelcnn,
    sample_transformer,
)
from vqtok.prior.transformer import CausalTransformer, KVCache, TransformerConfig

__all__ = [
    "CausalTransformer",
    "GatedPixelCNN",
    "KVCache",
    "PixelCNNConfig",
    "TransformerConfig",
    "draw",
    "filter_logits",
    "nll_bits",
    "nll_nats",
    "sample_pixelcnn",
    "sample_transformer",
]
