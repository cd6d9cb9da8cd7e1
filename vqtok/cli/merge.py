"""`vqtok merge FOLDER`: join the shards of `vqtok encode --shard I/N` and check every item is there exactly once."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from vqtok.cli.common import friendly_errors


@click.command("merge")
@click.argument("folder", type=click.Path(path_type=Path, file_okay=False))
@friendly_errors
def command(folder: Path) -> None:
    """Check the shards written to FOLDER and join them.

    Every shard must have finished (its shard-I-of-N.json record), all on the same inputs, and every input
    must be encoded (or have failed) in exactly one shard; the data itself is checked too (each shard's
    manifest lines or Parquet rows against its record). Token files: writes FOLDER/manifest.jsonl, the
    shards' manifests joined in input order, which TokenDataset and prior recipes read. Parquet: the
    codes-*.parquet files are the dataset as they are.

    \b
    Examples:
      vqtok encode corpus/ -o codes/ --shard 0/3     (and 1/3, 2/3: on three machines, or a Slurm array)
      vqtok merge codes/
    """
    from vqtok.corpus import check_shards, merge_shards

    report = check_shards(folder)
    written = merge_shards(folder, report)
    what = f"{len(report.files)} Parquet file(s)" if report.fmt == "parquet" else f"wrote {written}"
    click.echo(f"{folder}: {report.shards} shard(s), {len(report.done)} items encoded once each, "
               f"{len(report.failed)} failed; {what}", err=True)
    for _key, message in sorted(report.failed.items()):
        click.echo(f"error: {message}", err=True)
    if report.failed:
        sys.exit(1)
