"""File and folder runs behind `vqtok encode` / `vqtok decode`: inputs, output paths, resume, manifests.

A run is planned first (every input listed, every output path fixed, the output folders created and
probed for writing) and only then executed, so a bad output path fails before any work is done.
Per-file problems (unreadable audio, NaN samples, a clip shorter than one frame, ...) are VqtokErrors:
in a run of several files they are reported and the file is skipped; a run of one file stops on them.

Manifest (``manifest.jsonl`` in the output folder, one JSON object per encoded file, in input order)::

    {"path": "in/0_george_0.wav", "codes": "0_george_0.npy", "kind": "audio", "duration": 0.42,
     "length": 3360, "frames": [84], "label": 0}

``codes`` is relative to the manifest's folder; ``frames`` is the code count per level, top first
(images: ``"size": [H, W]`` and ``"frames": [[h, w], ...]``); ``label`` is null without a label rule.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from tqdm import tqdm

from vqtok.data.audio import AUDIO_EXTENSIONS, RULE_NUM_CLASSES, RULES, list_files, resample, write_wav
from vqtok.data.images import IMAGE_EXTENSIONS, load_image
from vqtok.data.stream import AudioStream
from vqtok.errors import VqtokError
from vqtok.files import atomic_write_text
from vqtok.plots import save_png
from vqtok.pretrained import registry
from vqtok.tokenizer import speech_level, streaming
from vqtok.tokenizer.codes import (
    is_complete,
    read_codes,
    read_sidecar,
    sidecar_path,
    write_codes,
)

logger = logging.getLogger(__name__)

MANIFEST = "manifest.jsonl"


@dataclass
class Job:
    """One input file and where its result goes; `key` is its path relative to the input root."""

    source: Path
    out: Path
    key: str
    error: str | None = None  # set at planning time (e.g. two inputs mapping to one output)


@dataclass
class Plan:
    """Jobs grouped by output folder; `manifest_dir` is None for a single-file output."""

    jobs: list[Job]
    manifest_dir: Path | None
    single: bool = False  # one input file to one output file: errors stop the run


@dataclass
class RunReport:
    done: int = 0
    skipped: int = 0
    failed: list[str] = field(default_factory=list)
    entries: list[dict] = field(default_factory=list)


# ------------------------------------------------------------------ planning
def plan_runs(inputs: list[Path], out: Path | None, out_suffixes: tuple[str, ...], default_suffix: str,
              in_suffixes: tuple[str, ...], out_dir_default: str, beside_suffix: str | None = None) -> list[Plan]:
    """Map inputs (files or folders) to outputs.

    * one input file with `out` ending in one of `out_suffixes`: that file;
    * `out` a folder: files go to out/NAME, a single folder's tree is mirrored under out, several
      folders under out/FOLDER_NAME;
    * no `out`: files beside themselves (NAME + `beside_suffix`, default `default_suffix`), a folder into
      a sibling folder NAME + `out_dir_default`.
    """
    for p in inputs:
        if not p.exists():
            raise VqtokError(f"{p}: no such file or folder; check the path")
    if out is not None and out.suffix in out_suffixes:
        if len(inputs) != 1 or inputs[0].is_dir():
            raise VqtokError(f"-o {out}: a single output file needs exactly one input file; give a folder instead")
        return [Plan([Job(inputs[0], out, inputs[0].name)], None, single=True)]
    plans: list[Plan] = []
    if out is None:
        for p in inputs:
            if p.is_dir():
                root = p.parent / (p.name + out_dir_default)
                plans.append(Plan(_folder_jobs(p, root, in_suffixes, default_suffix), root))
            else:
                beside = p.with_name(p.stem + (beside_suffix or default_suffix))
                plans.append(Plan([Job(p, beside, p.name)], None, single=len(inputs) == 1))
        return plans
    jobs: list[Job] = []
    several = len(inputs) > 1
    for p in inputs:
        if p.is_dir():
            jobs += _folder_jobs(p, out / p.name if several else out, in_suffixes, default_suffix)
        else:
            jobs.append(Job(p, out / (p.stem + default_suffix), p.name))
    seen: dict[Path, Path] = {}
    for job in jobs:
        if job.out in seen:
            job.error = f"{job.source}: its output {job.out} is already taken by {seen[job.out]}; rename one"
        else:
            seen[job.out] = job.source
    return [Plan(jobs, out, single=False)]


def _folder_jobs(folder: Path, root: Path, suffixes: tuple[str, ...], out_suffix: str) -> list[Job]:
    files = list_files(folder, suffixes)
    if not files:
        raise VqtokError(f"{folder}: no {'/'.join(suffixes)} files in this folder")
    jobs = []
    for f in files:
        rel = f.relative_to(folder)
        jobs.append(Job(f, root / rel.with_suffix(out_suffix), rel.as_posix()))
    return jobs


def prepare_output_dirs(plans: list[Plan]) -> None:
    """Create every output folder and check it can be written, before any work."""
    folders = sorted({job.out.parent for plan in plans for job in plan.jobs} |
                     {plan.manifest_dir for plan in plans if plan.manifest_dir is not None})
    for folder in folders:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(prefix=".vqtok-write-test.", dir=folder)
            os.close(fd)
            os.unlink(probe)
        except OSError as err:
            raise VqtokError(f"{folder}: cannot write to the output folder ({err.strerror or err}); "
                             "choose another -o") from None


# ------------------------------------------------------------------ labels
def label_function(tok_path: Path, choice: str) -> Callable[[str], int | None] | None:
    """key -> label for a label rule; 'auto' takes the rule of the recipe saved beside the tokenizer."""
    if choice == "none":
        return None
    if choice == "auto":
        choice = _recipe_rule(tok_path)
        if choice is None:
            return None
    if choice == "folder":
        return None  # resolved per plan: first folder level names the class (see folder_labels)
    rule = RULES[choice]

    def label(key: str) -> int | None:
        try:
            value, _split = rule(key)
        except ValueError:
            return None
        return None if value < 0 else value

    return label


def _recipe_rule(tok_path: Path) -> str | None:
    """The audio label rule of `recipe.yaml` beside the tokenizer (written by `vqtok train`), or of the recipe
    stored in a shipped tokenizer's file, if any."""
    recipe = tok_path.parent / "recipe.yaml"
    try:
        text = recipe.read_text() if recipe.is_file() else registry.header(tok_path).get("recipe")
        if not text:
            return None
        data = yaml.safe_load(text) or {}
        rule = data.get("data", {}).get("rule")
        kind = data.get("data", {}).get("kind")
    except (yaml.YAMLError, AttributeError, OSError, VqtokError):
        return None
    if kind == "audio" and rule in RULES and RULE_NUM_CLASSES.get(rule):
        return rule
    return None


def folder_labels(jobs: list[Job]) -> dict[str, int]:
    """Class index by first folder level, sorted (like ImageFolder(labels_from_subfolders=True))."""
    names = sorted({j.key.split("/")[0] for j in jobs if "/" in j.key})
    return {n: i for i, n in enumerate(names)}


# ------------------------------------------------------------------ encode
def check_output(job: Job, fingerprint: str | None, force: bool, resume: bool) -> bool:
    """True if the job is already done (resume); raises if its output exists and may not be replaced."""
    if force:
        return False
    side = sidecar_path(job.out)
    if resume and is_complete(job.out, fingerprint):
        return True
    if not resume and (job.out.exists() or side.exists()):
        raise VqtokError(f"{job.out}: already exists; pass --force to overwrite it")
    if side.exists():
        try:
            made_by = read_sidecar(job.out)["tokenizer"].get("fingerprint")
        except VqtokError:
            made_by = None
        if made_by != fingerprint:
            raise VqtokError(f"{job.out}: already exists, made by another tokenizer ({made_by}); pass --force "
                             "to overwrite it or choose another -o")
    # An array without a valid sidecar is an interrupted write of this run's kind: it is redone.
    return False


def load_input(tok, path: Path) -> tuple[Any, dict[str, Any]]:
    """An input file, checked: (AudioStream or image (C, H, W) float32, `source` metadata)."""
    if tok.dims == 1:
        if path.suffix.lower() in IMAGE_EXTENSIONS:
            raise VqtokError(f"{path}: an image, but this is an audio tokenizer")
        stream = AudioStream(path, tok.sample_rate)
        info = stream.info
        if stream.length < tok.hop:
            raise VqtokError(
                f"{path}: {stream.length} samples at {tok.sample_rate} Hz ({1000 * stream.length / tok.sample_rate:.1f} ms) "
                f"is shorter than one frame of this tokenizer ({tok.hop} samples, "
                f"{1000 * tok.hop / tok.sample_rate:.1f} ms); nothing to encode")
        source = {"kind": "audio", "path": str(path), "length": stream.length, "sample_rate": tok.sample_rate,
                  "orig_sample_rate": info.orig_sample_rate, "channels": info.channels,
                  "orig_frames": info.orig_frames, "duration": info.duration_seconds}
        return stream, source
    if path.suffix.lower() in AUDIO_EXTENSIONS:
        raise VqtokError(f"{path}: an audio file, but this is an image tokenizer")
    image = load_image(path, None, channels=tok.config.in_channels)  # (C, H, W) in [0, 1]
    h, w = image.shape[1:]
    if min(h, w) < tok.hop:
        raise VqtokError(f"{path}: {h}x{w} pixels is smaller than one code of this tokenizer ({tok.hop}x{tok.hop})")
    return image, {"kind": "image", "path": str(path), "size": [int(h), int(w)], "channels": int(image.shape[0])}


def manifest_entry(meta: dict[str, Any], codes_path: Path, manifest_dir: Path | None) -> dict[str, Any]:
    src = meta["source"]
    rel = codes_path.name if manifest_dir is None else os.path.relpath(codes_path, manifest_dir)
    entry: dict[str, Any] = {"path": src.get("path"), "codes": Path(rel).as_posix(), "kind": src.get("kind")}
    if src.get("kind") == "audio":
        entry.update(duration=src.get("duration"), length=src.get("length"),
                     frames=[lv["shape"][0] for lv in meta["levels"]])
    else:
        entry.update(size=src.get("size"), frames=[lv["shape"] for lv in meta["levels"]])
    entry["label"] = meta.get("label")
    return entry


def write_manifest(folder: Path, entries: list[dict]) -> Path:
    path = folder / MANIFEST
    text = "".join(json.dumps(e, sort_keys=False) + "\n" for e in entries)
    atomic_write_text(path, text)
    return path


class FileEncoder:
    """Runs encode plans: short clips and images in batches, long audio streamed block by block."""

    def __init__(self, tok, chunk_seconds: float | None = 10.0, batch_size: int = 1, force: bool = False,
                 label_fn: Callable[[str], int | None] | None = None, label_mode: str = "none",
                 progress: bool = True, echo: Callable[[str], None] = print, at_level: bool = True):
        self.tok = tok
        self.level_db = tok.level_db if at_level else None  # the speech level audio is brought to (None: as is)
        self.chunk_seconds = chunk_seconds
        self.batch_size = max(1, batch_size)
        self.force = force
        self.label_fn = label_fn
        self.label_mode = label_mode
        self.progress = progress
        self.echo = echo

    def run(self, plan: Plan) -> RunReport:
        report = RunReport()
        resume = not plan.single
        classes = folder_labels(plan.jobs) if self.label_mode == "folder" else {}
        pending: list[tuple[Job, Any, dict, int | None]] = []
        entries: dict[int, dict] = {}
        index = {id(job): i for i, job in enumerate(plan.jobs)}

        def fail(job: Job, err: Exception) -> None:
            if plan.single:
                raise err
            report.failed.append(str(err))
            self.echo(f"error: {err}")

        def flush() -> None:
            if not pending:
                return
            items = [p[1] for p in pending]
            codes = self.tok.encode_batch(items, batch_size=self.batch_size)
            for (job, _item, source, label), c in zip(pending, codes):
                try:
                    self._write(job, c, source, label, plan, entries, index, report)
                except VqtokError as err:
                    fail(job, err)
            pending.clear()

        bar = tqdm(plan.jobs, desc="encoding", unit="file", disable=not self.progress or len(plan.jobs) < 2,
                   dynamic_ncols=True)
        for job in bar:
            try:
                if job.error:
                    raise VqtokError(job.error)
                if check_output(job, self.tok.fingerprint, self.force, resume):
                    entries[index[id(job)]] = manifest_entry(read_sidecar(job.out), job.out, plan.manifest_dir)
                    report.skipped += 1
                    continue
                label = self._label(job, classes)
                data, source = load_input(self.tok, job.source)
                if self.tok.dims == 1 and data.length > self.tok.block_frames * self.tok.hop:
                    codes = self._encode_long(data, source)
                    self._write(job, codes, source, label, plan, entries, index, report)
                    continue
                item = self._to_level(data.read(), source) if self.tok.dims == 1 else data
                pending.append((job, item, source, label))
                if len(pending) >= self.batch_size:
                    flush()
            except VqtokError as err:
                fail(job, err)
        flush()
        if plan.manifest_dir is not None:
            ordered = [entries[i] for i in sorted(entries)]
            report.entries = ordered
            if ordered or not report.failed:
                write_manifest(plan.manifest_dir, ordered)
        return report

    def _label(self, job: Job, classes: dict[str, int]) -> int | None:
        if self.label_mode == "folder":
            return classes.get(job.key.split("/")[0]) if "/" in job.key else None
        return self.label_fn(job.key) if self.label_fn else None

    def _to_level(self, audio: np.ndarray, source: dict[str, Any], clip_db: float | None = None) -> np.ndarray:
        """`audio` (T,) brought to the tokenizer's `level_db` from the clip's level `clip_db` (default: the level of
        `audio` itself; a long file's pieces pass the whole file's); the gain goes into `source`."""
        if self.level_db is None:
            return audio
        clip_db = speech_level.level_db(audio, self.tok.sample_rate) if clip_db is None else clip_db
        source["gain_db"] = speech_level.gain_to(clip_db, self.level_db)
        return speech_level.apply_gain(audio, source["gain_db"])

    def _encode_long(self, stream: AudioStream, source: dict[str, Any]) -> Any:
        tok = self.tok
        sr = stream.info.orig_sample_rate
        frames = stream.info.orig_frames if not self.chunk_seconds else max(1, round(self.chunk_seconds * sr))
        pieces = stream.pieces(frames)
        if self.level_db is not None:  # one pass to measure the level, a second to encode
            meter = speech_level.LevelMeter(tok.sample_rate)
            for piece in stream.pieces(frames):
                meter.add(piece)
            clip_db = meter.level_db
            pieces = (self._to_level(piece, source, clip_db) for piece in pieces)
        parts = []
        total = stream.length / tok.sample_rate
        with tqdm(total=round(total, 1), desc=stream.path.name, unit="s", leave=False, dynamic_ncols=True,
                  disable=not self.progress or total < 30) as chunk_bar:
            for piece in streaming.stream_encode(tok, pieces):
                parts.append(piece)
                chunk_bar.update(round(len(piece[-1]) * tok.downsample[-1] / tok.sample_rate, 1))
        levels = [torch.from_numpy(c) for c in streaming.join_levels(parts, tok.levels)]
        return levels[0] if tok.levels == 1 else levels

    def _write(self, job: Job, codes, source, label, plan: Plan, entries, index, report: RunReport) -> None:
        try:
            write_codes(job.out, codes, self.tok, source, label)
        except OSError as err:
            raise VqtokError(f"{job.out}: cannot write ({err.strerror or err})") from None
        entries[index[id(job)]] = manifest_entry(read_sidecar(job.out), job.out, plan.manifest_dir)
        report.done += 1


# ------------------------------------------------------------------ decode
def decode_codes_file(tok, path: Path, out: Path, sample_rate: str = "model", chunk_seconds: float | None = 10.0,
                      force: bool = False, postfilter: bool = True) -> Path:
    """Decode one codes file to WAV (audio; through the tokenizer's postfilter unless `postfilter` is false) or PNG
    (images), trimmed to the original size."""
    if not force and out.exists():
        raise VqtokError(f"{out}: already exists; pass --force to overwrite it")
    file = read_codes(path, tok)
    if tok.dims == 1:
        src = file.source
        wav = tok.decode_long(file.levels if tok.levels > 1 else file.levels[0], size=int(src["length"]),
                              chunk_seconds=chunk_seconds, postfilter=postfilter)[0].cpu().numpy()  # (T,)
        wav = speech_level.apply_gain(wav, -src.get("gain_db", 0.0))  # back to the input's level (speech_level.py)
        rate = tok.sample_rate
        if sample_rate == "original":
            rate = int(src.get("orig_sample_rate", rate))
            if rate != tok.sample_rate:
                wav = resample(wav, tok.sample_rate, rate)
            n = int(src.get("orig_frames", len(wav)))
            wav = np.pad(wav, (0, max(0, n - len(wav))))[:n]
        elif sample_rate != "model":
            rate = int(sample_rate)
            if rate != tok.sample_rate:
                wav = resample(wav, tok.sample_rate, rate)
        peak = float(np.max(np.abs(wav))) if len(wav) else 0.0
        if peak > 1.0:
            logger.warning("%s: decoded audio peaks at %.2f; clipped to [-1, 1] for 16-bit WAV", path, peak)
        _write_file(out, lambda: write_wav(out, wav, rate))  # clipped to [-1, 1], 16-bit PCM
        return out
    with torch.no_grad():
        levels = [torch.from_numpy(a) for a in file.levels]
        img = tok.decode(levels if tok.levels > 1 else levels[0], size=file.size).cpu().numpy()  # (C, H, W)
    pixels = np.round(np.clip(img, 0.0, 1.0) * 255).astype(np.uint8).transpose(1, 2, 0)  # (H, W, C)
    _write_file(out, lambda: save_png(pixels, out))
    return out


def _write_file(out: Path, write: Callable[[], None]) -> None:
    try:
        write()
    except OSError as err:
        raise VqtokError(f"{out}: cannot write ({err.strerror or err})") from None
