"""The `vqtok` command: a click group with one small module per command."""

from __future__ import annotations

import importlib

import click

from vqtok.version import __version__

# command name -> module in vqtok.cli holding a click command called `command`
COMMANDS = {
    "train": "train",
    "plot": "plot",
    "encode": "encode",
    "decode": "decode",
    "info": "info",
    "eval": "eval",
    "sample": "sample",
    "compress": "compress",
    "decompress": "decompress",
    "models": "models",
    "export": "export",
    "merge": "merge",
}


class LazyGroup(click.Group):
    """Imports a command's module only when it runs, so `vqtok --help` and each command start fast.

    For the same reason the command modules import trainers and pipelines inside their command function
    (startup time; no import cycle is involved, see tests/test_imports.py)."""

    def list_commands(self, ctx):
        return sorted(COMMANDS)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        return importlib.import_module(f"vqtok.cli.{COMMANDS[name]}").command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="vqtok")
def main() -> None:
    """vqtok: train VQ-VAE tokenizers and priors; turn audio and images into discrete tokens."""
