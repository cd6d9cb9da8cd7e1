"""`vqtok decode CODES... [-m TOKENIZER]`: token files back to WAV or PNG, trimmed to the original size."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from vqtok.cli.common import friendly_errors, setup_logging
from vqtok.cli.options import device_option, open_tokenizer, optional_tokenizer_option, threads_option
from vqtok.errors import VqtokError


class TokenizerFinder:
    """The tokenizer of each codes file: -m when given, else the one its sidecar records (a shipped tokenizer
    with that fingerprint, or the file at the recorded path if it still has it), loaded once each."""

    def __init__(self, model: Path | None, device: str, threads: int | None):
        self.model, self.device, self.threads = model, device, threads
        self.loaded: dict[Path, object] = {}
        self.announced: set[tuple[str, str]] = set()

    def __call__(self, codes: Path):
        from vqtok.tokenizer.checkpoint import locate_tokenizer, tokenizer_file
        from vqtok.tokenizer.codes import read_sidecar

        if self.model is not None:
            return self._load(tokenizer_file(self.model))
        made_by = read_sidecar(codes)["tokenizer"]
        tok, recorded = self._load(locate_tokenizer(made_by, codes)), made_by.get("fingerprint")
        if (tok.fingerprint, recorded) not in self.announced:
            self.announced.add((tok.fingerprint, recorded))
            how = ("as the sidecar records" if recorded == tok.fingerprint
                   else f"a later version of the sidecar's {recorded}, with the same codes")
            click.echo(f"decoding with {tok.name or tok.path} (tokenizer {tok.fingerprint}, {how})", err=True)
        return tok

    def _load(self, path: Path):
        if path not in self.loaded:
            self.loaded[path], _ = open_tokenizer(path, self.device, self.threads)
        return self.loaded[path]

    def first_dims(self, inputs: tuple[Path, ...]) -> int:
        """Audio (1) or images (2): from -m, else from the first codes file's sidecar."""
        from vqtok.data.audio import list_files
        from vqtok.tokenizer.codes import CODE_SUFFIXES, read_sidecar

        if self.model is not None:
            return self(Path()).dims  # -m: the same tokenizer for every file
        for path in inputs:
            files = list_files(path, CODE_SUFFIXES) if path.is_dir() else [path]
            if files and files[0].is_file():
                return int(read_sidecar(files[0])["tokenizer"].get("dims", 1))
        return 1  # nothing readable: the run reports each input's own error


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
@friendly_errors
def command(codes: tuple[Path, ...], model: Path | None, out: Path | None, sample_rate: str, chunk_seconds: float,
            no_postfilter: bool, device: str, threads: int | None, force: bool) -> None:
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
    """
    from vqtok.pipeline import decode_codes_file, plan_runs, prepare_output_dirs
    from vqtok.tokenizer.codes import CODE_SUFFIXES

    setup_logging()
    if sample_rate not in ("model", "original") and not (sample_rate.isdigit() and int(sample_rate) > 0):
        raise click.BadParameter("use 'model', 'original' or a positive number of Hz", param_hint="--sample-rate")
    find = TokenizerFinder(model, device, threads)
    suffix = ".wav" if find.first_dims(codes) == 1 else ".png"
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
                tok = find(job.source)
                if (".wav" if tok.dims == 1 else ".png") != suffix:
                    raise VqtokError(f"{job.source}: made by an {'audio' if tok.dims == 1 else 'image'} tokenizer, "
                                     f"unlike the first codes file of this run; decode it on its own")
                decode_codes_file(tok, job.source, job.out, sample_rate, chunk_seconds or None, force,
                                  postfilter=not no_postfilter)
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
