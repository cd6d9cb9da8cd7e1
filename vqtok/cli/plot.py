"""`vqtok plot RUN`: draw a run's loss and codebook-usage curves to a PNG."""

from __future__ import annotations

from pathlib import Path

import click

from vqtok.cli.common import friendly_errors
from vqtok.errors import VqtokError


@click.command("plot")
@click.argument("run", type=click.Path(file_okay=False))
@click.option("-o", "--out", type=click.Path(dir_okay=False), help="PNG path (default: RUN/curves.png).")
@friendly_errors
def command(run: str, out: str | None) -> None:
    """Plot the curves of the run in folder RUN.

    \b
    Example:
      vqtok plot runs/mnist            # writes runs/mnist/curves.png
    """
    from vqtok.plots import plot_run

    if not (Path(run) / "metrics.jsonl").is_file():
        raise VqtokError(f"{run}: no metrics.jsonl (is this a vqtok run folder?)")
    click.echo(str(plot_run(run, out)))
