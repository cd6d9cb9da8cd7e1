"""What `vqtok info` shows of a token file: its levels and sidecar, as a plain dict and as lines (no torch)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np


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
