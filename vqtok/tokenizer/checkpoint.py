"""save_tokenizer / load_tokenizer: safetensors weights + config JSON, format and library versions."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from vqtok.config import from_dict, to_dict
from vqtok.errors import VqtokError
from vqtok.files import atomic_write
from vqtok import registry
from vqtok.tokenizer.base import Tokenizer, TokenizerConfig
from vqtok.tokenizer.build import build_tokenizer
from vqtok.version import __version__

FORMAT = "vqtok.tokenizer"
TOKENIZER_FILE = "tokenizer.safetensors"  # the tokenizer inside a training run's folder
FORMAT_VERSION = 1


def fingerprint(config_json: str, tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over the config and every tensor's name, dtype, shape and bytes: identifies a tokenizer."""
    h = hashlib.sha256(config_json.encode())
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


# Level fields added after fingerprints were first fixed: left out at their defaults, so every earlier fingerprint
# stays as it was.
LATER_LEVEL_FIELDS = {"codebooks": 1, "activation": None}


def architecture(config: dict[str, Any]) -> dict[str, Any]:
    """A tokenizer config dict without its quantizer section and each level's quantizer_dropout: those are
    training settings (EMA decay, beta, dead-code thresholds, k-means init, dropout) that a later stage may change
    with overrides, not the architecture."""
    arch = {k: v for k, v in config.items() if k != "quantizer"}
    for level in ("net", "top"):
        if isinstance(arch.get(level), dict):
            arch[level] = {k: v for k, v in arch[level].items() if k != "quantizer_dropout"
                           and not (k in LATER_LEVEL_FIELDS and v == LATER_LEVEL_FIELDS[k])}
    return arch


def codes_fingerprint(model: Tokenizer, tensors: dict[str, torch.Tensor] | None = None) -> str:
    """The fingerprint of what makes and reads the codes: the architecture and every tensor outside the
    decoder path (`decoder_modules()`), as loaded (fp32; `tensors`, default the model's own). A decoder-only
    update (loss.decoder_only, whatever its quantizer settings) keeps it, so token files of the earlier
    version decode with the later one; any other change of weights moves it."""
    decoder = tuple(f"{name}." for name, module in model.named_modules()
                    if any(module is d for d in model.decoder_modules()))
    tensors = _state_tensors(model) if tensors is None else tensors
    coding = {k: v for k, v in tensors.items() if not k.startswith(decoder)}
    return fingerprint(json.dumps(coding_architecture(to_dict(model.config)), sort_keys=True), coding)


def coding_architecture(config: dict[str, Any]) -> dict[str, Any]:
    """`architecture` without what came after the codes fingerprint was fixed and leaves the codes the model
    makes of a waveform as they were: `decoder_res_depth` (a deeper decoder), `level_db` (the level
    `vqtok encode` scales clips to, its gain kept in each token file) and `postfilter` (run on decoded audio).
    Every earlier fingerprint stays as it was. (decoder_head and head shape the decoder alone too, but were in it
    from the start.)"""
    arch = {k: v for k, v in architecture(config).items() if k not in ("level_db", "postfilter")}
    for level in ("net", "top"):
        if isinstance(arch.get(level), dict):
            arch[level] = {k: v for k, v in arch[level].items() if k != "decoder_res_depth"}
    return arch


def reads_codes_of(tok: Tokenizer, made_by: dict[str, Any]) -> bool:
    """True when `tok` reads the codes of the tokenizer that `made_by` (a sidecar's or a prior's record)
    describes: it is that tokenizer, a later version whose file lists it (`same_codes_as`), or one with the
    same codes fingerprint."""
    fp, codes = made_by.get("fingerprint"), made_by.get("codes_fingerprint")
    return (fp is not None and (fp == tok.fingerprint or fp in tok.same_codes_as)) or (
        codes is not None and codes == tok.codes_fingerprint)


def _state_tensors(model: Tokenizer) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}


def save_tokenizer(model: Tokenizer, path: str | Path, train_info: dict[str, Any] | None = None,
                   half: frozenset[str] = frozenset(), extra: dict[str, str] | None = None) -> str:
    """Write `model` to `path` (.safetensors) atomically; returns its fingerprint.

    `train_info` (recipe, step, ...) is stored as JSON metadata for `vqtok info`. `half` names tensors stored
    as float16 (shipped models; loading casts them back), `extra` adds metadata (a shipped model's card,
    `same_codes_as`). The fingerprint covers the tensors as stored, the codes fingerprint them as loaded.
    """
    config_json = json.dumps(to_dict(model.config), sort_keys=True)
    tensors = {k: v.half() if k in half else v for k, v in _state_tensors(model).items()}
    fp = fingerprint(config_json, tensors)
    codes_fp = codes_fingerprint(model, {k: v.float() if k in half else v for k, v in tensors.items()})
    metadata = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "vqtok_version": __version__,
        "config": config_json,
        "fingerprint": fp,
        "codes_fingerprint": codes_fp,
        "train": json.dumps(train_info or {}, sort_keys=True, default=str),
        **(extra or {}),
    }
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))
    model.fingerprint, model.codes_fingerprint = fp, codes_fp
    return fp


def read_header(path: str | Path, fmt: str, max_version: int, what: str, hints: dict[str, str] | None = None
                ) -> dict[str, str]:
    """The safetensors header metadata of a vqtok `what` file ("tokenizer", "prior"), checked for format `fmt`
    and a format version this vqtok reads. hints: extra words for a file of another format."""
    path = Path(path)
    if not path.is_file():
        raise VqtokError(f"{path}: no such {what} file")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as err:
        raise VqtokError(f"{path}: not a vqtok {what} checkpoint (unreadable safetensors: {err})") from None
    if meta.get("format") != fmt:
        hint = (hints or {}).get(meta.get("format"), "")
        raise VqtokError(f"{path}: not a vqtok {what} checkpoint (format is {meta.get('format')!r}, "
                         f"expected {fmt!r}){hint}")
    version = meta.get("format_version", "?")
    if not version.isdigit() or int(version) > max_version:
        raise VqtokError(
            f"{path}: {what} format version {version} (written by vqtok {meta.get('vqtok_version', '?')}) "
            f"is newer than this vqtok supports ({max_version}); upgrade vqtok"
        )
    return meta


def read_metadata(path: str | Path) -> dict[str, str]:
    """The safetensors header metadata of a tokenizer checkpoint, checked for format and version."""
    return read_header(path, FORMAT, FORMAT_VERSION, "tokenizer")


def tokenizer_file(name_or_path: str | Path) -> Path:
    """A tokenizer file, a run folder holding tokenizer.safetensors, or a shipped name -> the file.

    A path that exists always wins over a name. A bare word that is no shipped tokenizer is an error
    listing the names; a path that does not exist is returned as it is (load_tokenizer names it)."""
    shipped = registry.lookup(name_or_path, "tokenizer")
    if shipped is not None:
        return shipped
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        candidate = path / TOKENIZER_FILE
        if not candidate.is_file():
            raise VqtokError(f"{path}: a folder without {TOKENIZER_FILE}; pass a run folder or the tokenizer file")
        return candidate
    return path


def locate_tokenizer(made_by: dict[str, Any], where: str | Path) -> Path:
    """The file of the tokenizer that `made_by` (a codes sidecar's or a prior's record) describes: the
    shipped one with its fingerprint (or a later shipped version with the same codes), else the path recorded
    at encode time if that file still holds it (or the same codes). Otherwise a one-line error naming the
    fingerprint (both, when the recorded path holds another or the shipped model of the recorded name has other
    codes)."""
    fp, codes = made_by.get("fingerprint"), made_by.get("codes_fingerprint")
    shipped = registry.by_fingerprint(fp, codes)
    if shipped is not None:
        return shipped.path
    recorded, found = made_by.get("path"), None  # found: the fingerprint the recorded path holds now
    if recorded and Path(recorded).is_file():
        try:
            meta = read_metadata(recorded)
        except VqtokError:
            meta = {"fingerprint": "unreadable"}
        found = meta.get("fingerprint")
        if found == fp or (codes is not None and meta.get("codes_fingerprint") == codes):
            return Path(recorded)
    name = made_by.get("name")
    if name in registry.names("tokenizer"):  # a release of a shipped model whose codes this one does not share
        raise VqtokError(f"{where}: made by another version of {name} (tokenizer {fp}), with other codes than this "
                         f"vqtok's {name} (tokenizer {registry.get(name).fingerprint}); pass -m with the file "
                         "that made it (the vqtok release that encoded it ships it)")
    if found is not None:
        raise VqtokError(f"{where}: made by tokenizer {fp}, but {recorded} (its path at encode time) now holds "
                         f"tokenizer {found}; pass -m with the tokenizer that made it")
    was = f"; it was at {recorded} when encoding" if recorded else ""
    raise VqtokError(f"{where}: made by tokenizer {fp}, which is not shipped with vqtok and not found{was}; "
                     "pass -m TOKENIZER")


def load_tokenizer(path: str | Path, device: str | torch.device = "cpu") -> Tokenizer:
    """Rebuild a tokenizer from its checkpoint file (or run folder, or shipped name) alone, strictly; returns it
    in eval mode with `fingerprint`, `path` and `name` (the shipped name, else None) set."""
    path = tokenizer_file(path)
    meta = read_metadata(path)
    try:
        config = from_dict(TokenizerConfig, json.loads(meta["config"]))
    except (KeyError, json.JSONDecodeError, VqtokError) as err:
        raise VqtokError(f"{path}: bad tokenizer config in checkpoint ({err})") from None
    model = build_tokenizer(config)
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as err:
        raise VqtokError(f"{path}: corrupt tokenizer weights ({err})") from None
    fp = fingerprint(meta["config"], tensors)
    if meta.get("fingerprint") not in (None, fp):
        raise VqtokError(f"{path}: weights do not match the stored fingerprint (file corrupted or edited)")
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = sorted(k for k in set(expected) & set(tensors) if expected[k].shape != tensors[k].shape)
    if missing or unexpected or wrong:
        parts = [f"{label}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
                 for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)) if keys]
        raise VqtokError(f"{path}: weights do not fit the stored config ({'; '.join(parts)})")
    model.load_state_dict(tensors, strict=True)
    model.fingerprint, model.codes_fingerprint = fp, codes_fingerprint(model)
    if meta.get("codes_fingerprint") not in (None, model.codes_fingerprint):
        raise VqtokError(f"{path}: weights do not match the stored codes fingerprint (file corrupted or edited)")
    model.same_codes_as = registry.same_codes_as(meta, path)
    model.train_info = json.loads(meta.get("train", "{}") or "{}")
    model.path, model.name = path.resolve(), registry.name_of(path)
    return model.to(device).eval()
