"""vqtok: VQ-VAE tokenizers for audio and images, and priors over their codes."""

from vqtok.errors import VqtokError
from vqtok.tokenizer import (
    VQVAE,
    VQVAE2,
    LevelConfig,
    QuantizerConfig,
    TokenizerConfig,
    VectorQuantizer,
    build_tokenizer,
    load_tokenizer,
    save_tokenizer,
)
from vqtok.tokenizer.codes import TokenFile, read_codes, write_codes
from vqtok.version import __version__

__all__ = [
    "__version__", "VQVAE", "VQVAE2", "LevelConfig", "QuantizerConfig", "TokenizerConfig", "VectorQuantizer",
    "TokenFile", "VqtokError", "build_tokenizer", "load_tokenizer", "read_codes", "save_tokenizer", "write_codes",
]
