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
from vqtok.tokenizer.codes import TokenFile, read_codes, write_codes  # noqa: E402

__all__ = [
    "__version__", "VQVAE", "VQVAE2", "LevelConfig", "QuantizerConfig", "TokenizerConfig", "VectorQuantizer",
    "TokenFile", "VqtokError", "build_tokenizer", "load_tokenizer", "read_codes", "save_tokenizer", "write_codes",
]
