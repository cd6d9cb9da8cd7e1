"""save_prior / load_prior: safetensors weights + network config, layout and the tokenizer's fingerprint."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from vqtok.config import from_dict
from vqtok.errors import VqtokError
from vqtok.files import atomic_write
from vqtok.prior.layout import layout_from_record
from vqtok.prior.model import CodePrior
from vqtok.prior.networks import DERIVED_FIELDS, NETWORKS
from vqtok.tokenizer.checkpoint import read_header, reads_codes_of
from vqtok.tokenizer.codes import describe_tokenizer, tokenizer_summary
from vqtok.version import __version__

FORMAT = "vqtok.prior"
FORMAT_VERSION = 2  # 2: the network under "network", a layout record per shape of codes (1: "kind", one record)
# Level name -> file name inside a prior run folder.
PRIOR_FILES = {"codes": "prior.safetensors", "top": "prior_top.safetensors", "bottom": "prior_bottom.safetensors"}


def save_prior(prior: CodePrior, path: str | Path, tokenizer: dict[str, Any],
               train_info: dict[str, Any] | None = None, half: frozenset[str] = frozenset(),
               extra: dict[str, str] | None = None) -> None:
    """Write `prior` to `path` atomically. `tokenizer` is `tokenizer_summary(tok)` of the tokenizer it models;
    `half` names tensors stored as float16 and `extra` adds metadata (both for shipped models)."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in prior.state_dict().items()}
    tensors = {k: v.half() if k in half else v for k, v in tensors.items()}
    metadata = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "vqtok_version": __version__,
        "network": prior.layout.network,
        "config": json.dumps(prior.config, sort_keys=True),
        "layout": json.dumps(prior.layout.record(), sort_keys=True),
        "tokenizer": json.dumps(tokenizer, sort_keys=True),
        "tokenizer_fingerprint": str(tokenizer.get("fingerprint")),
        "train": json.dumps(train_info or {}, sort_keys=True, default=str),
        **(extra or {}),
    }
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def read_prior_metadata(path: str | Path) -> dict[str, str]:
    """The safetensors header of a prior checkpoint, checked for format and version."""
    hint = "; that is a tokenizer, give the prior (vqtok train recipes/*_prior.yaml)"
    return read_header(path, FORMAT, FORMAT_VERSION, "prior", {"vqtok.tokenizer": hint})


def check_tokenizer(prior: CodePrior, tok, path: str | Path, tok_path: str | Path | None = None) -> None:
    """Refuse a tokenizer other than the one `prior` (read from `path`) was trained on (or a later version
    with the same codes), naming both."""
    made_for = prior.tokenizer
    if not reads_codes_of(tok, made_for):
        where = f" ({tok_path})" if tok_path else ""
        raise VqtokError(f"{path}: this prior models the codes of {describe_tokenizer(made_for)}, but the tokenizer"
                         f"{where} is {describe_tokenizer(tokenizer_summary(tok))}; use the tokenizer it was "
                         "trained on (the copy in its run folder) or train a prior for this one")


def load_prior(path: str | Path, tokenizer=None, device: str | torch.device = "cpu") -> CodePrior:
    """Rebuild a prior from its file alone, strictly; with `tokenizer`, refuse a different one. Eval mode."""
    path = Path(path)
    meta = read_prior_metadata(path)
    try:
        # priors written before the network had its own word kept it under "kind" (header and layout JSON alike)
        _, config_cls = NETWORKS[meta["network"] if "network" in meta else meta["kind"]]
        config = json.loads(meta["config"])
        from_dict(config_cls, config)  # strict check of the stored fields
        layout = layout_from_record(json.loads(meta["layout"]))
        made_for = json.loads(meta["tokenizer"])
    except (KeyError, json.JSONDecodeError, VqtokError) as err:
        raise VqtokError(f"{path}: bad prior config in checkpoint ({err})") from None
    for name in DERIVED_FIELDS:  # rebuilt from the layout
        config.pop(name, None)
    prior = CodePrior(layout, config)
    try:
        tensors = load_file(str(path))
        prior.load_state_dict(tensors, strict=True)
    except (SafetensorError, OSError) as err:
        raise VqtokError(f"{path}: corrupt prior weights ({err})") from None
    except RuntimeError as err:
        first = str(err).splitlines()[0] if str(err) else "state dict mismatch"
        raise VqtokError(f"{path}: weights do not fit the stored config ({first})") from None
    prior.tokenizer = made_for
    prior.train_info = json.loads(meta.get("train", "{}") or "{}")
    if tokenizer is not None:
        check_tokenizer(prior, tokenizer, path)
    return prior.to(device).eval()
