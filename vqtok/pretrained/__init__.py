"""Tokenizers and priors shipped inside the package, by name (`vqtok models` lists them)."""

from vqtok.registry import ShippedModel, by_fingerprint, get, lookup, models, names

__all__ = ["ShippedModel", "by_fingerprint", "get", "lookup", "models", "names"]
