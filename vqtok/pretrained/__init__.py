"""Tokenizers and priors shipped inside the package, by name (`vqtok models` lists them)."""

from vqtok.registry import ShippedModel, by_fingerprint, get, lookup, models, names

# What `vqtok encode` uses without -m, by input kind (one rule, no switching by sample rate).
DEFAULT_TOKENIZERS = {"audio": "speech-16k", "image": "mnist"}

__all__ = ["DEFAULT_TOKENIZERS", "ShippedModel", "by_fingerprint", "get", "lookup", "models", "names"]
