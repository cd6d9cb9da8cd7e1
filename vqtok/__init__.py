"""vqtok: VQ-VAE tokenizers for audio and images, and priors over their codes.

The public names load on first use (PEP 562 module __getattr__): `vqtok --help`, `vqtok models` and `vqtok info`
of a token file start without importing torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from vqtok.errors import VqtokError
from vqtok.version import __version__

if TYPE_CHECKING:  # the same names, eagerly, for type checkers and editors
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
    from vqtok.tokenizer.stream import StreamDecoder, StreamEncoder

# public name -> the module that defines it
_LAZY = {
    **dict.fromkeys(["VQVAE", "VQVAE2", "LevelConfig", "QuantizerConfig", "TokenizerConfig", "VectorQuantizer",
                     "build_tokenizer", "load_tokenizer", "save_tokenizer"], "vqtok.tokenizer"),
    **dict.fromkeys(["TokenFile", "read_codes", "write_codes"], "vqtok.tokenizer.codes"),
    **dict.fromkeys(["StreamDecoder", "StreamEncoder"], "vqtok.tokenizer.stream"),
}

__all__ = ["__version__", "VqtokError", *_LAZY]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'vqtok' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
