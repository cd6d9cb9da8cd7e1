"""`vqtok decode CODES... -m TOKENIZER`: token files back to WAV or PNG, trimmed to the original size."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from vqtok.cli.common import friendly_errors, setup_logging
from vqtok.cli.options import device_option, open_tokenizer, threads_option, tokenizer_option
from vqtok.errors import VqtokError


@click.command("decode")
@click.argument("codes", nargs=-1, required=True, type=click.Path(path_type=Path))
@tokenizer_option
@click.option("-o", "--out", type=click.Path(path_type=Path),
              help="Output file (.wav/.png, one codes file) or folder (mirrors input folders). Default: NAME.decoded.wav "
                   "(or .png) beside each codes file; FOLDER_decoded/ for a folder.")
@click.option("--sample-rate", default="model", show_default=True,
              help="Audio: 'model' (the tokenizer's rate), 'original' (the encoded file's rate and exact "
                   "length), or a number of Hz.")
@click.option("--chunk-seconds", default=10.0, show_default=True, type=click.FloatRange(min=0),
              help="Audio decoded this much at a time (0: all at once); never changes the output.")
@device_option
@threads_option
@click.option("--force", is_flag=True, help="Overwrite existing outputs.")
@friendly_errors
def command(codes: tuple[Path, ...], model: Path, out: Path | None, sample_rate: str, chunk_seconds: float,
            device: str, threads: int | None, force: bool) -> None:
    """Decode CODES files (.npy/.npz with their .json sidecars) or folders of them.

    Codes made by another tokenizer, ids outside the codebook and wrong shapes are refused.

    \b
    Examples:
      vqtok decode speech.npy -m runs/speech/tokenizer.safetensors -o speech_decoded.wav
      vqtok decode speech.npy -m runs/speech/tokenizer.safetensors --sample-rate original
      vqtok decode fsdd_codes/ -m runs/speech/tokenizer.safetensors -o fsdd_decoded/
    """
    from vqtok.pipeline import decode_codes_file, plan_runs, prepare_output_dirs
    from vqtok.tokenizer.codes import CODE_SUFFIXES

    setup_logging()
    if sample_rate not in ("model", "original") and not (sample_rate.isdigit() and int(sample_rate) > 0):
        raise click.BadParameter("use 'model', 'original' or a positive number of Hz", param_hint="--sample-rate")
    tok, _ = open_tokenizer(model, device, threads)
    suffix = ".wav" if tok.dims == 1 else ".png"
    if out is not None and out.suffix.lower() in (".wav", ".png") and out.suffix.lower() != suffix:
        raise click.UsageError(f"this tokenizer decodes to {suffix} files, not {out.suffix}")
    # Beside the codes the default name must not be the encoded original's (a.wav -> a.npy -> a.wav).
    plans = plan_runs(list(codes), out, (suffix,), suffix, CODE_SUFFIXES, "_decoded", ".decoded" + suffix)
    prepare_output_dirs(plans)
    failed = 0
    for plan in plans:
        plan_failed = 0
        for job in plan.jobs:
            try:
                if job.error:
                    raise VqtokError(job.error)
                decode_codes_file(tok, job.source, job.out, sample_rate, chunk_seconds or None, force)
            except VqtokError as err:
                if plan.single:
                    raise
                failed += 1
                plan_failed += 1
                click.echo(f"error: {err}", err=True)
                continue
            if plan.single:
                click.echo(f"wrote {job.out}", err=True)
        if not plan.single:
            click.echo(f"{plan.manifest_dir}: {len(plan.jobs) - plan_failed} decoded, {plan_failed} failed", err=True)
    if failed:
        sys.exit(1)
