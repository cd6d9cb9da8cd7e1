"""The shipped models: name -> safetensors file in the package's pretrained/ folder, with the card from its header.

A shipped model is one file, ``vqtok/pretrained/NAME.safetensors``, written by
``python -m vqtok.pretrained.export`` (see that module). Its name is the file's stem; its header holds the
usual checkpoint metadata (format, config, fingerprint, ...) plus ``card`` (JSON: modality, rates,
codebooks, bitrate, parameters, training data and licences, recipe and step, measured quality, storage)
and ``recipe`` (the YAML the run was trained from).

Fingerprints: a shipped tokenizer's fingerprint is the usual one (config + stored tensors, dtypes
included) of the shipped file itself, so it is what `load_tokenizer` verifies, what token files record
and what `vqtok decode` looks up here. Weights stored in fp16 make a fingerprint other than the training
run's fp32 file; the card keeps that one as ``storage.source_fingerprint``. The header's
``codes_fingerprint`` covers what makes the codes (all but the decoder), and ``same_codes_as`` lists the
fingerprints of the earlier shipped versions it replaced with the same codes (decoder-only updates), so
token files made by those decode with it.

This module reads headers only (never weights) and imports nothing else of vqtok but its error type, so it sits
on a low floor and every layer above can ask it "is this a name?"; the export tool that writes the files is on
the top floor (vqtok/pretrained/export.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safetensors import SafetensorError, safe_open

from vqtok.errors import VqtokError

MODELS_DIR = Path(__file__).resolve().parent / "pretrained"  # the package data; tests point this elsewhere
SUFFIX = ".safetensors"
# header format -> role; the cards keep the key "kind" for it (`vqtok models --json`, shipped headers)
ROLES = {"vqtok.tokenizer": "tokenizer", "vqtok.prior": "prior"}


@dataclass
class ShippedModel:
    """One shipped file: its name, path, role (tokenizer | prior), fingerprint and card."""

    name: str
    path: Path
    role: str
    fingerprint: str | None
    card: dict[str, Any] = field(default_factory=dict)
    recipe: str = ""  # the YAML text of the training recipe
    codes_fingerprint: str | None = None  # tokenizers: the header's codes fingerprint
    same_codes_as: tuple[str, ...] = ()  # tokenizers: earlier versions' fingerprints, same codes

    @property
    def megabytes(self) -> float:
        return self.path.stat().st_size / 1e6


def header(path: str | Path) -> dict[str, str]:
    """The metadata of a safetensors file ({} for one without); a one-line error for an unreadable file."""
    try:
        with safe_open(str(path), framework="numpy") as f:  # the header only: no torch import
            return f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as err:
        raise VqtokError(f"{path}: unreadable safetensors header ({err})") from None


def names(role: str | None = None) -> list[str]:
    """Shipped names, sorted; with `role`, only tokenizers or only priors."""
    if not MODELS_DIR.is_dir():
        return []
    found = sorted(p.stem for p in MODELS_DIR.glob(f"*{SUFFIX}") if not p.name.startswith("."))
    return found if role is None else [n for n in found if get(n).role == role]


def get(name: str) -> ShippedModel:
    """The shipped model `name`; an unknown name is a one-line error listing the names."""
    path = MODELS_DIR / f"{name}{SUFFIX}"
    if "/" in name or not path.is_file():
        raise VqtokError(unknown_name(name))
    meta = header(path)
    try:
        card = json.loads(meta.get("card") or "{}")
    except json.JSONDecodeError:
        raise VqtokError(f"{path}: the shipped model's card is not JSON") from None
    role = ROLES.get(meta.get("format", ""), meta.get("format", "?"))
    fp = meta.get("fingerprint") if role == "tokenizer" else meta.get("tokenizer_fingerprint")
    return ShippedModel(name, path, role, fp, card, meta.get("recipe", ""), meta.get("codes_fingerprint"),
                        same_codes_as(meta, path))


def same_codes_as(meta: dict[str, str], path: str | Path) -> tuple[str, ...]:
    """A tokenizer header's `same_codes_as`: earlier versions' fingerprints (JSON list; none when absent)."""
    try:
        return tuple(json.loads(meta.get("same_codes_as") or "[]"))
    except json.JSONDecodeError:
        raise VqtokError(f"{path}: same_codes_as in the header is not a JSON list") from None


def models() -> list[ShippedModel]:
    return [get(n) for n in names()]


def unknown_name(name: str, role: str | None = None) -> str:
    shipped = names(role)
    what = f"shipped {role}" if role else "shipped model"
    listing = ", ".join(shipped) if shipped else "none are installed"
    return f"'{name}' is not a {what} name ({listing}); `vqtok models` lists them"


def lookup(name_or_path: str | Path, role: str) -> Path | None:
    """The shipped file for a name of `role`, or None when `name_or_path` exists as a path (a path always
    wins) or looks like one (has a folder part or a suffix). A bare word that is no shipped name of that
    role is an error listing the names."""
    text = str(name_or_path)
    if Path(text).expanduser().exists() or "/" in text or "\\" in text or Path(text).suffix or not text:
        return None
    if text not in names():
        raise VqtokError(unknown_name(text, role))
    model = get(text)
    if model.role != role:
        raise VqtokError(f"'{text}' is a shipped {model.role}, not a {role}; "
                         f"shipped {role}s: {', '.join(names(role)) or 'none'}")
    return model.path


def by_fingerprint(fingerprint: str | None, codes_fingerprint: str | None = None) -> ShippedModel | None:
    """The shipped tokenizer with this fingerprint, else the one that replaced it with the same codes (its
    `same_codes_as` lists the fingerprint, or it has this codes fingerprint), if any."""
    tokenizers = [model for model in models() if model.role == "tokenizer"]
    for model in tokenizers:
        if fingerprint and model.fingerprint == fingerprint:
            return model
    for model in tokenizers:
        if (fingerprint and fingerprint in model.same_codes_as) or (
                codes_fingerprint and model.codes_fingerprint == codes_fingerprint):
            return model
    return None


def name_of(path: str | Path) -> str | None:
    """The shipped name of a file in the models folder, else None."""
    path = Path(path).resolve()
    return path.stem if path.parent == MODELS_DIR.resolve() and path.suffix == SUFFIX else None
