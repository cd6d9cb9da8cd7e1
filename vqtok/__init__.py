"""vqtok: VQ-VAE tokenizers for audio and images, and priors over their codes."""

__version__ = "0.1.0"

from vqtok.errors import VqtokError  # noqa: E402
from vqtok.tokenizer import (  # noqa: E402
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

__all__ = [
    "__version__", "VQVAE", "VQVAE2", "LevelConfig", "QuantizerConfig", "TokenizerConfig", "VectorQuantizer",
    "VqtokError", "build_tokenizer", "load_tokenizer", "save_tokenizer",
]
