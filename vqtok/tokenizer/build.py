"""build_tokenizer: a tokenizer config checked once (what an audio or an image tokenizer must and must not have)
and its architecture built by name."""

from __future__ import annotations

from vqtok.errors import VqtokError
from vqtok.tokenizer.base import Tokenizer, TokenizerConfig
from vqtok.tokenizer.stacked import Stacked
from vqtok.tokenizer.vqvae import VQVAE
from vqtok.tokenizer.vqvae2 import VQVAE2

ARCHITECTURES: dict[str, type[Tokenizer]] = {"vqvae": VQVAE, "vqvae2": VQVAE2, "stacked": Stacked}


def build_tokenizer(config: TokenizerConfig) -> Tokenizer:
    """`config` checked, then its architecture built (name-to-class lookup for `config.arch`)."""
    try:
        cls = ARCHITECTURES[config.arch]
    except KeyError:
        raise VqtokError(f"unknown tokenizer arch '{config.arch}'; choose one of {', '.join(ARCHITECTURES)}") from None
    if config.dims not in cls.input_dims:
        raise VqtokError(f"arch '{config.arch}' is for dims {' or '.join(map(str, cls.input_dims))}, got dims "
                         f"{config.dims}")
    if config.dims == 1 and not (isinstance(config.sample_rate, int) and config.sample_rate > 0):
        raise VqtokError(f"model.sample_rate {config.sample_rate}: a waveform tokenizer (dims 1) needs its rate in Hz "
                         "(inputs are resampled to it; blocks, frame rate and bitrate are counted in it)")
    if config.dims == 2 and config.sample_rate is not None:
        raise VqtokError(f"model.sample_rate {config.sample_rate} is for waveforms; an image tokenizer (dims 2) "
                         "has none")
    if config.level_db is not None and (config.dims != 1 or config.sample_rate is None):
        raise VqtokError(f"level_db {config.level_db} is a speech level: for audio tokenizers (dims 1, a "
                         "sample_rate) only")
    if config.postfilter is not None and (config.dims != 1 or config.sample_rate is None):
        raise VqtokError(f"postfilter {config.postfilter} sharpens decoded audio: for audio tokenizers (dims 1, a "
                         "sample_rate) only")
    if config.postfilter is not None and not config.postfilter > 0:
        raise VqtokError(f"postfilter must be a positive exponent (1: no change), got {config.postfilter}")
    return cls(config)
