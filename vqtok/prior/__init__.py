"""Stage 2: autoregressive priors over tokenizer codes."""

from vqtok.prior.checkpoint import load_prior, save_prior
from vqtok.prior.layout import MapLayout, PriorLayout, SequenceLayout
from vqtok.prior.model import CodePrior
from vqtok.prior.pixelcnn import GatedPixelCNN, PixelCNNConfig
from vqtok.prior.sampling import (
    decode_transformer,
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
    "CodePrior",
    "PriorLayout",
    "GatedPixelCNN",
    "KVCache",
    "MapLayout",
    "PixelCNNConfig",
    "SequenceLayout",
    "TransformerConfig",
    "decode_transformer",
    "draw",
    "filter_logits",
    "load_prior",
    "nll_bits",
    "nll_nats",
    "sample_pixelcnn",
    "sample_transformer",
    "save_prior",
]
