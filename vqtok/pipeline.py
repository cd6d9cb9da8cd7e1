"""File and folder runs behind `vqtok encode` / `vqtok decode`: inputs, output paths, resume, manifests.

A run is planned first (every input listed, every output path fixed, the output folders created and
probed for writing) and only then executed, so a bad output path fails before any work is done.
Per-file problems (unreadable audio, NaN samples, a clip shorter than one frame, ...) are VqtokErrors:
in a run of several files they are reported and the file is skipped; a run of one file stops on them.

One job runner, `run_jobs(plan, work)`, executes both directions: a `Work` says whether a job is already done
(resume), reads its input (`start`) and finishes a batch of them (`finish`). `EncodeWork` turns inputs into token
files through a `Codec` (codec.py: what encoding means), `DecodeWork` turns token files back into the inputs'
format; `encode_plan` / `decode_plan` run them. What an entry of the manifest holds beyond path, codes and
kind is the modality's (modality.py).

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
from typing import Any, Protocol

import yaml
from tqdm import tqdm

from vqtok.codec import Codec, Prepared
from vqtok.data.audio import list_files
from vqtok.data.rules import RULE_NUM_CLASSES, RULES
from vqtok.errors import VqtokError
from vqtok.files import atomic_write_text
from vqtok.modality import Modality, by_name, modality_of
from vqtok import registry
from vqtok.tokenizer.checkpoint import locate_tokenizer, tokenizer_file
from vqtok.tokenizer.codes import (
    CODE_SUFFIXES,
    TokenFile,
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


# ------------------------------------------------------------------ the job runner
class Work(Protocol):
    """What a run does with each job; `run_jobs` owns the loop, per-file errors, progress and the manifest."""

    batch_size: int  # jobs handed to `finish` together
    manifest: bool  # whether a folder run writes manifest.jsonl

    def done(self, job: Job, resume: bool, manifest_dir: Path | None) -> dict | None:
        """A finished job's manifest entry (skipped on resume), or None; raises if its output may not be replaced."""

    def start(self, job: Job) -> Any:
        """The job's input, read and checked (a VqtokError fails the job)."""

    def finish(self, jobs: list[Job], inputs: list[Any], manifest_dir: Path | None) -> list[dict | VqtokError]:
        """Per job its manifest entry, or the VqtokError that failed it."""


def run_jobs(plan: Plan, work: Work, progress: bool = True, echo: Callable[[str], None] = print,
             desc: str = "encoding") -> RunReport:
    """Run a plan's jobs through `work`, `work.batch_size` at a time, in input order.

    A folder run (``plan.single`` false) resumes: a job `work.done` reports finished is skipped; a failing job is
    reported through `echo` and the rest go on. A single-file run stops on the first error.
    """
    report = RunReport()
    entries: dict[int, dict] = {}
    pending: list[tuple[int, Job, Any]] = []

    def fail(err: VqtokError) -> None:
        if plan.single:
            raise err
        report.failed.append(str(err))
        echo(f"error: {err}")

    def flush() -> None:
        results = work.finish([job for _, job, _ in pending], [item for _, _, item in pending], plan.manifest_dir)
        for (i, _, _), result in zip(pending, results):
            if isinstance(result, VqtokError):
                fail(result)
            else:
                entries[i] = result
                report.done += 1
        pending.clear()

    bar = tqdm(plan.jobs, desc=desc, unit="file", disable=not progress or len(plan.jobs) < 2, dynamic_ncols=True)
    for i, job in enumerate(bar):
        try:
            if job.error:
                raise VqtokError(job.error)
            entry = work.done(job, not plan.single, plan.manifest_dir)
            if entry is not None:
                entries[i] = entry
                report.skipped += 1
                continue
            pending.append((i, job, work.start(job)))
            if len(pending) >= work.batch_size:
                flush()
        except VqtokError as err:
            fail(err)
    if pending:
        flush()
    if plan.manifest_dir is not None and work.manifest:
        report.entries = [entries[i] for i in sorted(entries)]
        if report.entries or not report.failed:
            write_manifest(plan.manifest_dir, report.entries)
    return report


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


def manifest_entry(meta: dict[str, Any], codes_path: Path, manifest_dir: Path | None) -> dict[str, Any]:
    """The manifest line of a token file from its sidecar `meta`; `codes` relative to `manifest_dir`."""
    src = meta["source"]
    rel = codes_path.name if manifest_dir is None else os.path.relpath(codes_path, manifest_dir)
    entry: dict[str, Any] = {"path": src.get("path"), "codes": Path(rel).as_posix(), "kind": src.get("kind")}
    entry.update(by_name(src.get("kind")).manifest_fields(src, [lv["shape"] for lv in meta["levels"]]))
    entry["label"] = meta.get("label")
    return entry


def write_manifest(folder: Path, entries: list[dict]) -> Path:
    path = folder / MANIFEST
    text = "".join(json.dumps(e, sort_keys=False) + "\n" for e in entries)
    atomic_write_text(path, text)
    return path


class EncodeWork:
    """Inputs to token files through a `Codec`; labels by a rule, by first folder, or none."""

    manifest = True

    def __init__(self, codec: Codec, force: bool = False, label_fn: Callable[[str], int | None] | None = None,
                 label_mode: str = "none", classes: dict[str, int] | None = None):
        self.codec = codec
        self.batch_size = codec.batch_size
        self.force = force
        self.label_fn = label_fn
        self.label_mode = label_mode
        self.classes = classes or {}

    def done(self, job: Job, resume: bool, manifest_dir: Path | None) -> dict | None:
        if check_output(job, self.codec.tok.fingerprint, self.force, resume):
            return manifest_entry(read_sidecar(job.out), job.out, manifest_dir)
        return None

    def start(self, job: Job) -> tuple[Prepared, int | None]:
        return self.codec.open(job.source), self._label(job)

    def finish(self, jobs: list[Job], inputs: list[tuple[Prepared, int | None]],
               manifest_dir: Path | None) -> list[dict | VqtokError]:
        codes = self.codec.encode([item for item, _ in inputs])
        results: list[dict | VqtokError] = []
        for job, (item, label), c in zip(jobs, inputs, codes):
            try:
                meta = write_codes(job.out, c, self.codec.tok, item.source, label)
            except OSError as err:
                results.append(VqtokError(f"{job.out}: cannot write ({err.strerror or err})"))
                continue
            except VqtokError as err:
                results.append(err)
                continue
            results.append(manifest_entry(meta, job.out, manifest_dir))
        return results

    def _label(self, job: Job) -> int | None:
        if self.label_mode == "folder":
            return self.classes.get(job.key.split("/")[0]) if "/" in job.key else None
        return self.label_fn(job.key) if self.label_fn else None


def encode_plan(plan: Plan, codec: Codec, force: bool = False, label_fn: Callable[[str], int | None] | None = None,
                label_mode: str = "none", progress: bool = True, echo: Callable[[str], None] = print) -> RunReport:
    """Encode a plan's inputs to token files (and its folder's manifest.jsonl); see `run_jobs`."""
    classes = folder_labels(plan.jobs) if label_mode == "folder" else {}
    work = EncodeWork(codec, force, label_fn, label_mode, classes)
    return run_jobs(plan, work, progress, echo, "encoding")


# ------------------------------------------------------------------ decode
class TokenizerFinder:
    """The tokenizer of each codes file: `model` when given, else the one its sidecar records (a shipped tokenizer
    with that fingerprint, or the file at the recorded path if it still has it), loaded once each by `load`."""

    def __init__(self, model: Path | None, load: Callable[[Path], Any], echo: Callable[[str], None] = print):
        self.model, self.load, self.echo = model, load, echo
        self.loaded: dict[Path, Any] = {}
        self.announced: set[tuple[str, str]] = set()

    def __call__(self, codes: Path):
        if self.model is not None:
            return self._load(tokenizer_file(self.model))
        made_by = read_sidecar(codes)["tokenizer"]
        tok, recorded = self._load(locate_tokenizer(made_by, codes)), made_by.get("fingerprint")
        if (tok.fingerprint, recorded) not in self.announced:
            self.announced.add((tok.fingerprint, recorded))
            how = ("as the sidecar records" if recorded == tok.fingerprint
                   else f"a later version of the sidecar's {recorded}, with the same codes")
            self.echo(f"decoding with {tok.name or tok.path} (tokenizer {tok.fingerprint}, {how})")
        return tok

    def _load(self, path: Path):
        if path not in self.loaded:
            self.loaded[path] = self.load(path)
        return self.loaded[path]

    def first_modality(self, inputs: list[Path]) -> Modality:
        """What the run decodes: the modality of `model`, else of the first codes file's source."""
        if self.model is not None:
            return modality_of(self(Path()).config)  # one tokenizer for every file
        for path in inputs:
            files = list_files(path, CODE_SUFFIXES) if path.is_dir() else [path]
            if files and files[0].is_file():
                return by_name(read_sidecar(files[0])["source"].get("kind"))
        return by_name("audio")  # nothing readable: the run reports each input's own error


class DecodeWork:
    """Token files back to WAV or PNG, each through a `Codec` of the tokenizer that `find` gives it."""

    batch_size = 1
    manifest = False

    def __init__(self, find: Callable[[Path], Any], suffix: str, sample_rate: str = "model",
                 chunk_seconds: float | None = 10.0, force: bool = False, postfilter: bool = True):
        self.find, self.suffix = find, suffix
        self.sample_rate, self.chunk_seconds = sample_rate, chunk_seconds
        self.force, self.postfilter = force, postfilter
        self.codecs: dict[int, Codec] = {}

    def done(self, job: Job, resume: bool, manifest_dir: Path | None) -> None:
        if not self.force and job.out.exists():
            raise VqtokError(f"{job.out}: already exists; pass --force to overwrite it")
        return None

    def start(self, job: Job) -> tuple[Codec, TokenFile]:
        tok = self.find(job.source)
        codec = self.codecs.setdefault(id(tok), Codec(tok, chunk_seconds=self.chunk_seconds))
        if codec.modality.decoded_suffix != self.suffix:
            raise VqtokError(f"{job.source}: made by an {codec.modality.name} tokenizer, unlike the first codes file "
                             "of this run; decode it on its own")
        return codec, read_codes(job.source, tok)

    def finish(self, jobs: list[Job], inputs: list[tuple[Codec, TokenFile]],
               manifest_dir: Path | None) -> list[dict | VqtokError]:
        results: list[dict | VqtokError] = []
        for job, (codec, file) in zip(jobs, inputs):
            try:
                decoded = codec.decode(file.levels, file.source, self.sample_rate, self.postfilter)
                codec.write(job.out, decoded, file.path)
            except VqtokError as err:
                results.append(err)
                continue
            results.append({"path": str(job.source), "out": str(job.out)})
        return results


def decode_plan(plan: Plan, work: DecodeWork, progress: bool = False, echo: Callable[[str], None] = print) -> RunReport:
    """Decode a plan's token files; see `run_jobs`."""
    return run_jobs(plan, work, progress, echo, "decoding")
