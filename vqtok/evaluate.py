"""Round-trip evaluation of a tokenizer on a folder or a recipe's validation set (`vqtok eval`).

What is scored is the modality's (modality.py): for audio SI-SNR and log-mel distance per clip (means reported),
STOI and narrow-band PESQ on "strings" of clips (`modality.speech_strings`); for images MSE and PSNR per image
(pixels in [0, 1]). All: codebook usage, perplexity and entropy per level over all codes, and bitrate (bit/s for
audio, bits per image for images).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from vqtok import metrics
from vqtok.codec import Codec
from vqtok.data.audio import AudioFolder, list_files
from vqtok.data.build import build_dataset, check_dims
from vqtok.config import load_yaml
from vqtok.errors import VqtokError
from vqtok.modality import modality_of
from vqtok.tokenizer.recipe import parse_recipe
from vqtok.tokenizer.train_latent import load_latent_recipe


def iter_folder(tok, folder: Path, max_items: int | None) -> Iterator[tuple[str, np.ndarray]]:
    """(name, signal (T,) at the tokenizer's rate | image (C, H, W)) for the files of a folder; bad files raise."""
    modality = modality_of(tok.config)
    files = list_files(folder, modality.extensions)
    if not files:
        raise VqtokError(f"{folder}: no {modality.name} files to evaluate on")
    for path in files[:max_items]:
        yield str(path), modality.read(tok, path)


def iter_recipe(tok, recipe_path: Path, max_items: int | None) -> Iterator[tuple[str, np.ndarray]]:
    """The validation set of a recipe (the first `data.valid_items` of its test split), as `vqtok train` builds it;
    of a latent_level recipe, the audio files of its validation split."""
    raw = load_yaml(recipe_path)
    if raw.get("task") == "latent_level":
        data = load_latent_recipe(raw).data
        yield from iter_folder(tok, Path(data.root) / data.valid_split, max_items)
        return
    data = parse_recipe(raw, recipe_path).data
    try:
        check_dims(data, tok.dims)
    except VqtokError as err:
        raise VqtokError(f"{recipe_path}: {err}") from None
    dataset = build_dataset(data, "test", tok.sample_rate)
    for i in range(min(data.valid_items, max_items or data.valid_items, len(dataset))):
        if isinstance(dataset, AudioFolder):
            yield str(dataset.files[i]), dataset.clip(i)
        else:
            name = str(dataset.files[i]) if hasattr(dataset, "files") else f"{data.kind} test #{i}"
            yield name, dataset[i]["x"].numpy()


def evaluate(tok, items: Iterator[tuple[str, np.ndarray]], with_pesq: bool = True, with_stoi: bool = True,
             batch_size: int = 1, progress: bool = False) -> dict[str, Any]:
    """Encode, decode and score every item; returns metric means, per-level code statistics and bitrate."""
    per_item: dict[str, list[float]] = {}
    codes_per_level: list[list[np.ndarray]] = [[] for _ in range(tok.levels)]
    pairs: list[tuple[np.ndarray, np.ndarray]] = []
    bits = 0.0
    count = 0
    batch: list[tuple[str, np.ndarray]] = []
    bar = tqdm(desc="evaluating", unit="item", disable=not progress)

    codec = Codec(tok, batch_size=batch_size)  # audio at the tokenizer's level_db, as `vqtok encode` brings it

    def run_batch() -> None:
        nonlocal bits, count
        inputs = [codec.prepare(x) for _, x in batch]
        for (_name, x), item, c in zip(batch, inputs, codec.encode(inputs)):
            levels = c if isinstance(c, list) else [c]
            for store, lv in zip(codes_per_level, levels):
                store.append(lv.cpu().numpy().ravel())
            bits += sum(lv.numel() * math.log2(k) for lv, k in zip(levels, tok.codebook_size))
            y = codec.decode(levels, item.source).data
            for name, value in codec.modality.scores(y, x, tok).items():
                per_item.setdefault(name, []).append(value)
            pairs.append((x, y))
            count += 1
            bar.update(1)
        batch.clear()

    for item in items:
        batch.append(item)
        if len(batch) >= batch_size:
            run_batch()
    if batch:
        run_batch()
    bar.close()
    if count == 0:
        raise VqtokError("nothing to evaluate")
    result: dict[str, Any] = {"items": count, "kind": codec.modality.name,
                              "tokenizer": tok.fingerprint, "metrics": {}, "skipped": {}}
    for name, values in per_item.items():
        finite = [v for v in values if math.isfinite(v)]
        result["metrics"][name] = float(np.mean(finite)) if finite else float("inf")
    extra = codec.modality.summary(tok, pairs, bits, count, with_stoi, with_pesq)
    result["metrics"].update(extra.pop("metrics", {}))
    result["skipped"].update(extra.pop("skipped", {}))
    result.update(extra)
    names = tok.level_names
    result["levels"] = []
    for name, arrays, k in zip(names, codes_per_level, tok.codebook_size):
        stats = metrics.codebook_stats(np.concatenate(arrays), k)
        result["levels"].append({"name": name, "codebook_size": k, **stats})
    return result


UNITS = {"si_snr": "dB", "psnr": "dB", "log_mel_distance": "", "stoi": "", "pesq_nb": "MOS", "mse": ""}


def format_result(result: dict[str, Any]) -> str:
    rows = [("items", str(result["items"]))]
    for name, value in result["metrics"].items():
        rows.append((name, f"{value:.4f} {UNITS.get(name, '')}".rstrip()))
    for name, why in result.get("skipped", {}).items():
        rows.append((f"{name} skipped", why))
    if "bitrate" in result:
        rows.append(("bitrate", f"{result['bitrate']:.1f} bit/s (nominal {result['nominal_bitrate']:.1f})"))
    if "bits_per_image" in result:
        rows.append(("bits per image", f"{result['bits_per_image']:.1f}"))
    for lv in result["levels"]:
        rows.append((f"{lv['name']} usage", f"{lv['usage']:.3f} of {lv['codebook_size']}"))
        rows.append((f"{lv['name']} perplexity", f"{lv['perplexity']:.1f}"))
        rows.append((f"{lv['name']} entropy", f"{lv['entropy_bits']:.3f} bits"))
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
