"""What `vqtok info` shows of a tokenizer: its model card, as a plain dict and as lines."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from vqtok.config import to_dict
from vqtok.modality import by_name, modality_of


def model_card(tok, path: Path) -> dict[str, Any]:
    """Architecture, size, rates per level, bitrate and training provenance of a loaded tokenizer."""
    modality = modality_of(tok.config)
    levels = []
    names = tok.level_names
    for name, cfg, down, k in zip(names, tok.level_configs, tok.downsample, tok.codebook_size):
        level: dict[str, Any] = {"name": name, "codebook_size": k, "bits_per_code": round(math.log2(k), 3),
                                 "downsample": down, "code_dim": cfg.code_dim, "channels": list(cfg.channels),
                                 "strides": list(cfg.strides), "res_depth": cfg.res_depth,
                                 "encoder_res_depth": cfg.encoder_depth, "decoder_res_depth": cfg.decoder_depth,
                                 "dilation_growth": cfg.dilation_growth, "encoder_stem": cfg.encoder_stem,
                                 "decoder_head": cfg.decoder_head}
        if tok.sample_rate:
            level["frame_rate"] = tok.sample_rate / down
        if cfg.codebooks > 1:  # residual stages: each frame is Q codes, any prefix decodes
            level["codebooks"] = cfg.codebooks
        levels.append(level)
    card: dict[str, Any] = {
        "file": str(path),
        "fingerprint": tok.fingerprint,
        "arch": tok.config.arch,
        "kind": modality.name,
        "in_channels": tok.config.in_channels,
        "activation": tok.config.activation,
        "parameters": int(sum(p.numel() for p in tok.parameters())),
        "levels": levels,
        "train": dict(getattr(tok, "train_info", {}) or {}),
        "quantizer": to_dict(tok.config.quantizer),
    }
    recipe = path.parent / "recipe.yaml"
    if recipe.is_file():
        card["recipe_file"] = str(recipe)
    card.update(modality.card(tok))
    return card


def depths(level: dict[str, Any]) -> str:
    """", E residual blocks a stage in the encoder (D in the decoder)" where the two differ, else nothing."""
    enc = level.get("encoder_res_depth", level["res_depth"])
    dec = level.get("decoder_res_depth", level["res_depth"])
    return f", {enc} residual blocks a stage in the encoder ({dec} in the decoder)" if enc != dec else ""


def format_card(card: dict[str, Any]) -> str:
    """The model card as aligned `key: value` lines."""
    lines = [f"tokenizer     {card['file']}",
             f"fingerprint   {card['fingerprint']}",
             f"architecture  {card['arch']} ({card['kind']}, {card['in_channels']} channel(s), {card['activation']})",
             f"parameters    {card['parameters']:,}"]
    head, tail = by_name(card["kind"]).card_lines(card)
    lines += head
    for lv in card["levels"]:
        rate = f", {lv['frame_rate']:g} frames/s" if "frame_rate" in lv else ""
        books = f"{lv['codebooks']} codebooks of " if "codebooks" in lv else ""
        lines.append(f"level {lv['name']:<7} {books}{lv['codebook_size']} codes ({lv['bits_per_code']:g} bits), "
                     f"downsample {lv['downsample']}{rate}; channels {lv['channels']}, strides {lv['strides']}, "
                     f"code dim {lv['code_dim']}; {lv['encoder_stem']} stem, {lv['decoder_head']} decoder"
                     + depths(lv))
    lines += tail
    train = card.get("train") or {}
    recipe = train.get("recipe", "unknown")
    step = train.get("step", "unknown")
    lines.append(f"training      recipe {recipe}, step {step}" + (f" ({card['recipe_file']})" if "recipe_file" in card else ""))
    for key, value in train.items():  # best_mse or best_mel_distance, with best_step
        if key.startswith("best_") and key != "best_step":
            lines.append(f"best valid    {key[5:]} {value:.4g} at step {train.get('best_step', '?')}")
    return "\n".join(lines)
