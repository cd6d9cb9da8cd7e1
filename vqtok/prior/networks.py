"""The prior networks by name (a recipe's `model.network`), and how a layout completes a recipe's network config."""

from __future__ import annotations

from dataclasses import fields

import torch.nn as nn

from vqtok.errors import VqtokError
from vqtok.prior.pixelcnn import GatedPixelCNN, PixelCNNConfig
from vqtok.prior.transformer import CausalTransformer, TransformerConfig

# network -> (its class, its config dataclass). Each class says what it can read (`reads_sequences`,
# `conditions_on_maps`), whether its items may share a batch bit-exactly (`batchable`), and how it reads a code
# map (`map_logits`, `sample_map`, `map_steps`).
NETWORKS: dict[str, tuple[type[nn.Module], type]] = {
    "pixelcnn": (GatedPixelCNN, PixelCNNConfig),
    "transformer": (CausalTransformer, TransformerConfig),
}
# Config fields that follow from the tokenizer and the data, never from a recipe.
DERIVED_FIELDS = ("num_codes", "num_classes", "cond_codes", "cond_ratio", "null_class", "codebooks")


def network_class(name: str) -> type[nn.Module]:
    """The class of network `name`; an unknown name is an error listing the choices."""
    if name not in NETWORKS:
        raise VqtokError(f"unknown network '{name}'; choose one of {', '.join(NETWORKS)}")
    return NETWORKS[name][0]


def build_network(layout, config: dict) -> nn.Module:
    """The network of `layout.network` from the recipe's `model.config` plus the fields the layout fixes (those of
    DERIVED_FIELDS that the network's config has)."""
    cls, config_cls = NETWORKS[layout.network]
    derived = {"num_codes": layout.num_outputs, "num_classes": layout.num_classes,
               "cond_codes": layout.cond_codebook_size, "null_class": layout.null_class,
               "cond_ratio": layout.cond_ratio, "codebooks": layout.codebooks}
    own = {f.name for f in fields(config_cls)}
    return cls.from_config(config_cls(**{**config, **{k: v for k, v in derived.items() if k in own}}))
