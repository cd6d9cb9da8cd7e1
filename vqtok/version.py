"""The library version, written into every checkpoint and token file (nothing else, so anything may import it)."""

__version__ = "0.1.0"
