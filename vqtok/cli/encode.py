"""`vqtok encode INPUT... [-m TOKENIZER]`: audio or images to token files (.npy/.npz + JSON sidecar)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from vqtok.cli.common import echo_err, friendly_errors, setup_logging
from vqtok.cli.corpus import corpus_options, run_corpus, wanted
from vqtok.cli.options import device_option, open_tokenizer, optional_tokenizer_option, threads_option
from vqtok.errors import VqtokError


def default_model(inputs: tuple[Path, ...]) -> Path:
    """The shipped tokenizer used without -m: the default model of the inputs' modality (modality.py), never
    chosen by sample rate."""
    from vqtok.data.audio import list_files
    from vqtok.modality import MODALITIES
    from vqtok.registry import get, names

    with_default = [m for m in MODALITIES if m.default_model]
    kinds = set()
    for path in inputs:
        if path.is_dir():
            kinds |= {m for m in with_default if list_files(path, m.extensions)}
        elif not path.exists():
            raise VqtokError(f"{path}: no such file or folder; check the path")
        else:
            kinds |= {m for m in with_default if path.suffix.lower() in m.extensions}
    if len(kinds) != 1:
        what = "both audio and images" if kinds else "no audio or image files"
        raise VqtokError(f"{', '.join(map(str, inputs))}: {what}; pass -m TOKENIZER (vqtok models lists the shipped ones)")
    name = kinds.pop().default_model
    if name not in names():
        raise VqtokError(f"no -m given and the default tokenizer {name} is not installed with this vqtok "
                         f"(shipped: {', '.join(names()) or 'none'}); pass -m TOKENIZER")
    return get(name).path


@click.command("encode")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@optional_tokenizer_option("Default: speech-16k for audio, mnist for images.")
@click.option("-o", "--out", type=click.Path(path_type=Path),
              help="Output file (.npy/.npz, one input file) or folder (mirrors input folders, writes manifest.jsonl). "
                   "Default: beside each input file; FOLDER_codes/ for a folder.")
@device_option
@threads_option
@click.option("--batch-size", default=1, show_default=True, type=click.IntRange(min=1),
              help="Short clips (or images) encoded together. The codes are the same for any size. On a CPU "
                   "images gain (mnist, 64 at a time: 2.3x), short clips a little (0.5 s digits, 8-128 at a time: "
                   "1.1-1.3x), long audio does not (0.8x).")
@click.option("--chunk-seconds", default=10.0, show_default=True, type=click.FloatRange(min=0),
              help="Audio read and encoded this much at a time (0: whole file); never changes the codes.")
@click.option("--labels", default="auto", show_default=True,
              type=click.Choice(["auto", "none", "fsdd", "folder"]),
              help="Manifest labels: auto = the rule of the recipe.yaml beside the tokenizer; fsdd = digit of "
                   "{digit}_{speaker}_{take}.wav; folder = first subfolder names the class.")
@click.option("--as-is", is_flag=True,
              help="Encode audio at its own level: skip the scaling to the tokenizer's speech level (level_db, "
                   "vqtok info shows it) that makes the codes of a recording hardly depend on how loud it is.")
@click.option("--codebooks", type=click.IntRange(min=1), default=None,
              help="Multi-codebook tokenizers (vqtok info lists them): keep the first N residual codebooks of each "
                   "frame, a lower bitrate (default: all).")
@click.option("--force", is_flag=True, help="Overwrite existing outputs (a folder run otherwise resumes).")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@corpus_options
@friendly_errors
def command(inputs: tuple[Path, ...], model: Path | None, out: Path | None, device: str, batch_size: int,
            chunk_seconds: float, labels: str, as_is: bool, codebooks: int | None, force: bool, quiet: bool,
            threads: int | None,
            workers: int, shard: str | None, shard_by: str, fmt: str) -> None:
    """Encode INPUT files or folders (searched recursively) into codes.

    Without -m, audio is encoded with the shipped speech-16k and images with the shipped mnist
    (whatever the file's sample rate or size; the model used is named on stderr).
    Audio is mixed to mono and resampled to the tokenizer's rate (the original rate, channels and
    length are kept in the sidecar) and, for a tokenizer with a speech level (the shipped speech
    models: -24 dBFS), scaled to it (the gain is kept too, and decode undoes it; --as-is skips it);
    long files are encoded in bounded memory, with codes identical for any --chunk-seconds. A folder
    run writes manifest.jsonl, reports bad files and skips them (exit code 1 when some failed), and
    when run again skips files already done.

    \b
    Examples:
      vqtok encode speech.wav                       (shipped speech-16k; writes speech.npy)
      vqtok encode call.wav -m speech-8k
      vqtok encode speech.wav -m speech-lm-16k --codebooks 4     (40 frames/s x 4 codebooks, 1.6 kbit/s)
      vqtok encode speech.wav -m runs/speech/tokenizer.safetensors -o speech.npy
      vqtok encode ../shared/data/fsdd/recordings -m runs/speech/tokenizer.safetensors -o fsdd_codes/
      vqtok encode digits/ -m runs/mnist/tokenizer.safetensors -o digit_codes/ --labels folder
    """
    from vqtok.codec import Codec
    from vqtok.modality import modality_of
    from vqtok.pipeline import encode_plan, label_function, plan_runs, prepare_output_dirs
    from vqtok.tokenizer.codes import CODE_SUFFIXES, codes_suffix

    setup_logging()
    if model is None:
        model = default_model(inputs)
        click.echo(f"using the shipped tokenizer {model.stem} (no -m given; vqtok models lists the others)", err=True)
    tok, tok_path = open_tokenizer(model, device, threads)
    in_suffixes = modality_of(tok.config).extensions
    suffix = codes_suffix(tok.levels)
    if out is not None and out.suffix in CODE_SUFFIXES and out.suffix != suffix:
        raise click.UsageError(f"this {tok.levels}-level tokenizer writes {suffix} files, not {out.suffix}")
    plans = plan_runs(list(inputs), out, (suffix,), suffix, in_suffixes, "_codes")
    if wanted(workers, shard, fmt):  # workers, shards or Parquet: cli/corpus.py
        failed = run_corpus(plans, tok_path, device, threads, workers, shard, shard_by, fmt, chunk_seconds or None,
                            batch_size, labels, not as_is, force, quiet, lambda line: click.echo(line, err=True),
                            codebooks)
        if failed:
            click.echo(f"{len(failed)} file(s) failed (listed above)", err=True)
            sys.exit(1)
        return
    prepare_output_dirs(plans)
    codec = Codec(tok, at_level=not as_is, chunk_seconds=chunk_seconds or None, batch_size=batch_size,
                  progress=not quiet, codebooks=codebooks)
    label_fn = label_function(tok_path, labels)
    done = skipped = 0
    failed: list[str] = []
    for plan in plans:
        report = encode_plan(plan, codec, force=force, label_fn=label_fn, label_mode=labels, progress=not quiet,
                             echo=echo_err)
        done, skipped, failed = done + report.done, skipped + report.skipped, failed + report.failed
        if plan.single:
            click.echo(f"wrote {plan.jobs[0].out}", err=True)
        else:
            click.echo(f"{plan.manifest_dir}: {report.done} encoded, {report.skipped} already done, "
                       f"{len(report.failed)} failed", err=True)
    if failed:
        click.echo(f"{len(failed)} file(s) failed (listed above)", err=True)
        sys.exit(1)
