"""`vqtok encode`'s corpus options (--workers, --shard, --shard-by, --format) and the run they start."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import click

from vqtok.errors import VqtokError


def corpus_options(fn):
    """The options of a corpus run, added to a click command."""
    options = [
        click.option("--workers", default=1, show_default=True, type=click.IntRange(min=1),
                     help="Processes encoding at once, each with its own model and one torch thread (--threads "
                          "sets more); the codes and the manifest order are the same for any number."),
        click.option("--shard", "shard", default=None, metavar="I/N",
                     help="Encode only shard I of N of the inputs (0-based); default: from RANK/WORLD_SIZE "
                          "(torchrun) or SLURM_ARRAY_TASK_ID/COUNT (a Slurm array). Join the shards with "
                          "vqtok merge."),
        click.option("--shard-by", default="position", show_default=True, type=click.Choice(["position", "hash"]),
                     help="How a shard's items are chosen: contiguous runs of the sorted input paths, or by a "
                          "hash of each path (stable when inputs are added)."),
        click.option("--format", "fmt", default="npy", show_default=True, type=click.Choice(["npy", "parquet"]),
                     help="npy: a token file (+ JSON sidecar) per input and manifest.jsonl. parquet: one row per "
                          "input in codes-*.parquet files of a few hundred MB (pip install 'vqtok[parquet]').")]
    for option in reversed(options):
        fn = option(fn)
    return fn


def wanted(workers: int, shard: str | None, fmt: str) -> bool:
    """Whether the options (or the launcher's environment) ask for a corpus run rather than the plain one."""
    from vqtok.corpus import shard_from_env

    return workers > 1 or shard is not None or fmt != "npy" or shard_from_env() is not None


def run_corpus(plans, tok_path: Path, device: str, threads: int | None, workers: int, shard_text: str | None,
               shard_by: str, fmt: str, chunk_seconds: float | None, batch_size: int, labels: str, at_level: bool,
               force: bool, quiet: bool, echo: Callable[[str], None], codebooks: int | None = None) -> list[str]:
    """Each plan (a folder run) through corpus.encode_corpus; returns the one-line errors of the failed items."""
    from vqtok.corpus import EncodeSettings, encode_corpus, parse_shard, shard_from_env
    from vqtok.pipeline import folder_labels

    shard = parse_shard(shard_text) if shard_text else None
    if shard is None and (found := shard_from_env()) is not None:
        shard, launcher = found
        echo(f"shard {shard} (from {launcher}'s environment)")
    failed: list[str] = []
    for plan in plans:
        if plan.manifest_dir is None:
            raise VqtokError(f"{plan.jobs[0].source}: --workers, --shard and --format parquet encode folders; give "
                             "a folder (and -o DIR)")
        settings = EncodeSettings(tok_path, plan.manifest_dir, device, at_level, chunk_seconds, batch_size, force,
                                  labels, folder_labels(plan.jobs) if labels == "folder" else {}, codebooks)
        report = encode_corpus(plan, settings, workers, shard, shard_by, fmt, progress=not quiet, echo=echo,
                               threads=threads or 1)
        where = f"{plan.manifest_dir} (shard {shard})" if shard else str(plan.manifest_dir)
        if report.already_done:
            echo(f"{where}: already done ({len(plan.jobs)} inputs); pass --force to encode again")
            continue
        files = f", {len(report.files)} Parquet file(s)" if fmt == "parquet" else ""
        echo(f"{where}: {report.done} encoded, {report.skipped} already done, {len(report.failed)} failed{files}")
        failed += list(report.failed.values())
    return failed


def decode_item(codes: tuple[Path, ...], item: str, model: Path | None, out: Path | None, sample_rate: str,
                chunk_seconds: float | None, postfilter: bool, device: str, threads: int | None, force: bool,
                echo: Callable[[str], None]) -> Path:
    """`vqtok decode FILE.parquet --item ID`: one row of Parquet codes to WAV or PNG. Default output:
    ID's name + .decoded.wav (or .png) beside the Parquet file."""
    from vqtok.cli.options import open_tokenizer
    from vqtok.codec import Codec
    from vqtok.data.parquet import CodesParquet
    from vqtok.tokenizer.checkpoint import locate_tokenizer, reads_codes_of
    from vqtok.tokenizer.codes import check_shapes, describe_tokenizer, tokenizer_summary

    if len(codes) != 1:
        raise VqtokError("--item takes one Parquet file or folder (the dataset holding the item)")
    data = CodesParquet(codes[0])
    file = data.get(item)
    tok, _ = open_tokenizer(model or locate_tokenizer(data.tokenizer, data.files[0]), device, threads)
    if not reads_codes_of(tok, data.tokenizer):
        raise VqtokError(f"{data.files[0]}: made by {describe_tokenizer(data.tokenizer)}, but decoding with "
                         f"{describe_tokenizer(tokenizer_summary(tok))}; pass the tokenizer that encoded it")
    check_shapes(file, tok)
    codec = Codec(tok, chunk_seconds=chunk_seconds)
    suffix = codec.modality.decoded_suffix
    out = out or data.files[0].parent / (Path(item).stem + ".decoded" + suffix)
    if out.suffix.lower() != suffix:
        raise VqtokError(f"-o {out}: this tokenizer decodes to {suffix} files")
    if out.exists() and not force:
        raise VqtokError(f"{out}: already exists; pass --force to overwrite it")
    codec.write(out, codec.decode(file.levels, file.source, sample_rate, postfilter), f"{file.path} [{item}]")
    echo(f"wrote {out}")
    return out
