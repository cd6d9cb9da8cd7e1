"""Shared CLI plumbing: one-line errors with exit code 2, stderr lines beside progress bars, logging set-up."""

from __future__ import annotations

import functools
import logging
import sys

import click

from vqtok.errors import VqtokError


def echo_err(line: str) -> None:
    """Write ``line`` to stderr on a line of its own, also while a progress bar is drawn there.

    A tqdm bar redraws itself with a carriage return and ends its line only when it closes, so a plain write
    would be glued onto the bar's line. On a terminal tqdm clears the bar, writes the line and redraws the bar;
    into a file or a pipe the bar's last state keeps its line and ours starts on the next.
    """
    tqdm_module = sys.modules.get("tqdm")  # never imported: no bar is drawn (and the CLI starts without it)
    bars = [b for b in getattr(getattr(tqdm_module, "tqdm", None), "_instances", ()) if not b.disable]
    if bars and sys.stderr.isatty():
        tqdm_module.tqdm.write(line, file=sys.stderr)
    else:
        click.echo(("\n" if bars else "") + line, err=True)


def friendly_errors(fn):
    """Turn VqtokError (and Ctrl-C) into one line on stderr and a non-zero exit, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except VqtokError as err:
            echo_err(f"error: {err}")
            sys.exit(2)
        except KeyboardInterrupt:
            echo_err("interrupted")
            sys.exit(130)

    return wrapper


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(message)s", force=True)
