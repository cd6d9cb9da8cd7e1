"""What `vqtok info` shows: a tokenizer's model card and a codes file's contents, as plain dicts."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from vqtok.config import to_dict


def model_card(tok, path: Path) -> dict[str, Any]:
    """Architecture, size, rates per level, bitrate and training provenance of a loaded tokenizer."""
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
        "kind": "audio" if tok.dims == 1 else "image",
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
    if tok.dims == 1:
        ctx = tok.context
        card.update(sample_rate=tok.sample_rate, hop=tok.hop, level_db=tok.level_db, postfilter=tok.postfilter,
                    tokens_per_second=sum(level.get("frame_rate", 0.0) * level.get("codebooks", 1)
                                          for level in levels) or None,
                    bitrate=tok.bitrate,
                    receptive_field={"encode_samples": [ctx.encode_left, ctx.encode_right],
                                     "decode_hops": [ctx.decode_left, ctx.decode_right]},
                    block_frames=tok.block_frames,
                    # live coding (stream.py): right context plus one hop, the decoder's plus the postfilter window
                    latency_ms={"encode": 1000 * tok.stream_encoder().latency,
                                "decode": 1000 * tok.stream_decoder().latency,
                                "decode_no_postfilter": 1000 * tok.stream_decoder(postfilter=False).latency})
        if tok.codebooks > 1:  # bit/s of every prefix of the residual stages (--codebooks N)
            card["bitrate_by_codebooks"] = {n: tok.bitrate_at(n) for n in range(1, tok.codebooks + 1)}
    else:
        card["tokens_per_32x32_image"] = sum(math.prod(s) for s in tok.code_shape((32, 32)))
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
    if card["kind"] == "audio":
        lines.append(f"sample rate   {card['sample_rate']} Hz (hop {card['hop']} samples)")
        if card.get("level_db") is not None:
            lines.append(f"input level   {card['level_db']:g} dBFS: vqtok encode scales speech to it (gated RMS), "
                         "the token file keeps the gain for decode")
        if card.get("postfilter") is not None:
            lines.append(f"postfilter    spectral sharpening, exponent {card['postfilter']:g}: decode ends with it "
                         "(--no-postfilter: not)")
    for lv in card["levels"]:
        rate = f", {lv['frame_rate']:g} frames/s" if "frame_rate" in lv else ""
        books = f"{lv['codebooks']} codebooks of " if "codebooks" in lv else ""
        lines.append(f"level {lv['name']:<7} {books}{lv['codebook_size']} codes ({lv['bits_per_code']:g} bits), "
                     f"downsample {lv['downsample']}{rate}; channels {lv['channels']}, strides {lv['strides']}, "
                     f"code dim {lv['code_dim']}; {lv['encoder_stem']} stem, {lv['decoder_head']} decoder"
                     + depths(lv))
    if card["kind"] == "audio":
        lines.append(f"tokens/s      {card['tokens_per_second']:g}")
        lines.append(f"bitrate       {card['bitrate']:.1f} bit/s")
        if "bitrate_by_codebooks" in card:
            lines.append("by codebooks  " + ", ".join(f"{n}: {b / 1000:g} kbit/s"
                                                      for n, b in card["bitrate_by_codebooks"].items())
                         + " (vqtok encode --codebooks N)")
        rf = card["receptive_field"]
        lines.append(f"context       encoder {rf['encode_samples'][0]}+{rf['encode_samples'][1]} samples, "
                     f"decoder {rf['decode_hops'][0]}+{rf['decode_hops'][1]} hops; blocks of {card['block_frames']} hops")
        lat = card["latency_ms"]
        post = (f" ({lat['decode_no_postfilter']:.1f} ms without the postfilter)"
                if card.get("postfilter") is not None else "")
        lines.append(f"latency       streaming: encode {lat['encode']:.1f} ms, decode {lat['decode']:.1f} ms{post} "
                     "(right context + one hop)")
    else:
        lines.append(f"tokens        {card['tokens_per_32x32_image']} per 32x32 image")
    train = card.get("train") or {}
    recipe = train.get("recipe", "unknown")
    step = train.get("step", "unknown")
    lines.append(f"training      recipe {recipe}, step {step}" + (f" ({card['recipe_file']})" if "recipe_file" in card else ""))
    for key, value in train.items():  # best_mse or best_mel_distance, with best_step
        if key.startswith("best_") and key != "best_step":
            lines.append(f"best valid    {key[5:]} {value:.4g} at step {train.get('best_step', '?')}")
    return "\n".join(lines)


def codes_summary(file) -> dict[str, Any]:
    """A TokenFile's contents: per-level shape, dtype, id range and usage, and the sidecar."""
    levels = []
    for lv_meta, a, k in zip(file.meta["levels"], file.levels, file.meta["tokenizer"]["codebook_size"]):
        counts = np.bincount(a.ravel(), minlength=k) if a.size else np.zeros(k, int)
        levels.append({"name": lv_meta["name"], "shape": list(a.shape), "dtype": lv_meta.get("dtype"),
                       "min": int(a.min()) if a.size else None, "max": int(a.max()) if a.size else None,
                       "distinct": int((counts > 0).sum()), "codebook_size": k,
                       "head": a.ravel()[:16].tolist()})
    return {"file": str(file.path), "tokenizer": file.meta["tokenizer"], "source": file.source,
            "label": file.label, "levels": levels, "vqtok_version": file.meta.get("vqtok_version")}


def format_codes(summary: dict[str, Any]) -> str:
    tok, src = summary["tokenizer"], summary["source"]
    lines = [f"codes file    {summary['file']}",
             f"tokenizer     {tok.get('fingerprint')} ({tok.get('arch')}, codebook {tok.get('codebook_size')})"]
    if tok.get("codebooks"):  # a multi-codebook tokenizer: the file may hold a prefix of its stages
        held = summary["levels"][0]["shape"][0]
        rate = tok["sample_rate"] / tok["downsample"][0] if tok.get("sample_rate") else None
        bits = f", {rate * held * math.log2(tok['codebook_size'][0]) / 1000:g} kbit/s" if rate else ""
        lines.append(f"codebooks     {held} of {tok['codebooks']}{bits}")
    if src.get("kind") == "audio":
        lines.append(f"source        {src.get('path')}: {src.get('duration', 0):.3f} s, {src.get('orig_sample_rate')} Hz, "
                     f"{src.get('channels')} channel(s), {src.get('orig_frames')} frames "
                     f"-> {src.get('length')} samples at {src.get('sample_rate')} Hz"
                     + (f", encoded with a gain of {src['gain_db']:+.2f} dB" if "gain_db" in src else ""))
    else:
        lines.append(f"source        {src.get('path')}: {src.get('size')} pixels, {src.get('channels')} channel(s)")
    if summary.get("label") is not None:
        lines.append(f"label         {summary['label']}")
    for lv in summary["levels"]:
        lines.append(f"level {lv['name']:<7} shape {lv['shape']} {lv['dtype']}, ids {lv['min']}..{lv['max']}, "
                     f"{lv['distinct']} of {lv['codebook_size']} codes used; first: {lv['head']}")
    return "\n".join(lines)
