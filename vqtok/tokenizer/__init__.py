"""Stage 1: waveform/image -> codes -> waveform/image."""

from vqtok.tokenizer.base import LevelConfig, Tokenizer, TokenizerConfig, TokenizerOutput
from vqtok.tokenizer.build import build_tokenizer
from vqtok.tokenizer.checkpoint import load_tokenizer, save_tokenizer
from vqtok.tokenizer.heads import HeadConfig
from vqtok.tokenizer.nets import Decoder, Encoder, ResBlock
from vqtok.tokenizer.quantizer import QuantizerConfig, QuantizerOutput, VectorQuantizer
from vqtok.tokenizer.vqvae import VQVAE
from vqtok.tokenizer.vqvae2 import VQVAE2

__all__ = [
    "Decoder", "Encoder", "HeadConfig", "LevelConfig", "QuantizerConfig", "QuantizerOutput", "ResBlock", "Tokenizer",
    "TokenizerConfig", "TokenizerOutput", "VQVAE", "VQVAE2", "VectorQuantizer", "build_tokenizer",
    "load_tokenizer", "save_tokenizer",
]
