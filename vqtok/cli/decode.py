"""`vqtok decode CODES... [-m TOKENIZER]`: token files back to WAV or PNG, trimmed to the original size."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from vqtok.cli.common import echo_err, friendly_errors, setup_logging
from vqtok.cli.corpus import decode_item
from vqtok.cli.options import device_option, open_tokenizer, optional_tokenizer_option, threads_option


@click.command("decode")
@click.argument("codes", nargs=-1, required=True, type=click.Path(path_type=Path))
@optional_tokenizer_option("Default: the tokenizer recorded in each codes file's sidecar (shipped, or at "
                           "its path at encode time).")
@click.option("-o", "--out", type=click.Path(path_type=Path),
              help="Output file (.wav/.png, one codes file) or folder (mirrors input folders). Default: NAME.decoded.wav "
                   "(or .png) beside each codes file; FOLDER_decoded/ for a folder.")
@click.option("--sample-rate", default="model", show_default=True,
              help="Audio: 'model' (the tokenizer's rate), 'original' (the encoded file's rate and exact "
                   "length), or a number of Hz.")
@click.option("--chunk-seconds", default=10.0, show_default=True, type=click.FloatRange(min=0),
              help="Audio decoded this much at a time (0: all at once); never changes the output.")
@click.option("--no-postfilter", is_flag=True,
              help="Audio: the decoder's output as it is, without the tokenizer's spectral sharpening postfilter "
                   "(vqtok info shows whether it has one).")
@device_option
@threads_option
@click.option("--force", is_flag=True, help="Overwrite existing outputs.")
@click.option("--item", default=None, metavar="ID",
              help="Decode the row with this id (its input path) out of Parquet codes (vqtok encode --format parquet).")
@friendly_errors
def command(codes: tuple[Path, ...], model: Path | None, out: Path | None, sample_rate: str, chunk_seconds: float,
            no_postfilter: bool, device: str, threads: int | None, force: bool, item: str | None) -> None:
    """Decode CODES files (.npy/.npz with their .json sidecars) or folders of them.

    Without -m the tokenizer is the one the sidecar records: the shipped tokenizer with that
    fingerprint, else the file at the path recorded at encode time if it still has it.
    Codes made by another tokenizer, ids outside the codebook and wrong shapes are refused.

    \b
    Examples:
      vqtok decode speech.npy                      (writes speech.decoded.wav)
      vqtok decode speech.npy -m runs/speech/tokenizer.safetensors -o speech_decoded.wav
      vqtok decode speech.npy -m runs/speech/tokenizer.safetensors --sample-rate original
      vqtok decode fsdd_codes/ -m runs/speech/tokenizer.safetensors -o fsdd_decoded/
      vqtok decode codes/codes-00000.parquet --item speaker1/a.flac -o a.wav
    """
    from vqtok.modality import MODALITIES
    from vqtok.pipeline import DecodeWork, TokenizerFinder, decode_plan, plan_runs, prepare_output_dirs
    from vqtok.tokenizer.codes import CODE_SUFFIXES

    setup_logging()
    if sample_rate not in ("model", "original") and not (sample_rate.isdigit() and int(sample_rate) > 0):
        raise click.BadParameter("use 'model', 'original' or a positive number of Hz", param_hint="--sample-rate")
    if item is not None:  # one row of Parquet codes: cli/corpus.py
        decode_item(codes, item, model, out, sample_rate, chunk_seconds or None, not no_postfilter, device, threads,
                    force, echo_err)
        return
    find = TokenizerFinder(model, lambda path: open_tokenizer(path, device, threads)[0], echo_err)
    suffix = find.first_modality(list(codes)).decoded_suffix
    if out is not None and out.suffix.lower() in {m.decoded_suffix for m in MODALITIES} and out.suffix.lower() != suffix:
        raise click.UsageError(f"this tokenizer decodes to {suffix} files, not {out.suffix}")
    # Beside the codes the default name must not be the encoded original's (a.wav -> a.npy -> a.wav).
    plans = plan_runs(list(codes), out, (suffix,), suffix, CODE_SUFFIXES, "_decoded", ".decoded" + suffix)
    prepare_output_dirs(plans)
    work = DecodeWork(find, suffix, sample_rate, chunk_seconds or None, force, postfilter=not no_postfilter)
    failed = 0
    for plan in plans:
        report = decode_plan(plan, work, echo=echo_err)
        failed += len(report.failed)
        if plan.single:
            echo_err(f"wrote {plan.jobs[0].out}")
        else:
            echo_err(f"{plan.manifest_dir}: {report.done} decoded, {len(report.failed)} failed")
    if failed:
        sys.exit(1)
