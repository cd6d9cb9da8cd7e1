"""`vqtok info PATH`: a tokenizer's model card, a shipped model's card, or what a codes file holds."""

from __future__ import annotations

import json
from pathlib import Path

import click

from vqtok.cli.common import friendly_errors
from vqtok.errors import VqtokError


@click.command("info")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@friendly_errors
def command(path: Path, as_json: bool) -> None:
    """Show the model card of a TOKENIZER (.safetensors, run folder or shipped name), of a shipped prior,
    the contents of a CODES file (.npy/.npz), or the rate of a prior-coded token file (.vqz: bits per code,
    ratio to the raw codes).

    A shipped model's card adds its training data, licences, recipe and measured quality. The card lists the architecture, parameter count, sample rate, downsampling, frame rate and
    codebook size per level, bitrate, tokens per second, and the training recipe and step.

    \b
    Examples:
      vqtok info speech-16k
      vqtok info runs/speech/tokenizer.safetensors
      vqtok info speech.npy
      vqtok info runs/mnist/tokenizer.safetensors --json
      vqtok info 0_george_0.vqz
    """
    from vqtok.cli.codes_card import codes_summary, format_codes
    from vqtok.codefile import CODE_SUFFIXES, read_arrays  # a token file is read without torch

    from vqtok import registry

    shipped = None
    if not path.exists():
        if str(path) not in registry.names() or "/" in str(path):
            names = ", ".join(registry.names()) or "none installed"
            raise VqtokError(f"{path}: no such file, nor a shipped model ({names}); give a tokenizer (.safetensors), "
                             "a codes file (.npy/.npz) or a shipped name")
        shipped = registry.get(str(path))
        if shipped.role != "tokenizer":
            from vqtok.cli.models import format_shipped_card

            click.echo(json.dumps(shipped.card, indent=1) if as_json else format_shipped_card(shipped))
            return
    if path.suffix == ".vqz":
        from vqtok.prior.coding import format_vqz, read_vqz, vqz_summary

        summary = vqz_summary(read_vqz(path))
        click.echo(json.dumps(summary, indent=1) if as_json else format_vqz(summary))
        return
    if path.suffix in CODE_SUFFIXES:
        summary = codes_summary(read_arrays(path))
        click.echo(json.dumps(summary, indent=1) if as_json else format_codes(summary))
        return
    from vqtok.cli.card import format_card, model_card
    from vqtok.cli.options import open_tokenizer

    tok, tok_path = open_tokenizer(path, "cpu")
    card = model_card(tok, tok_path)
    if shipped is None:
        click.echo(json.dumps(card, indent=1) if as_json else format_card(card))
        return
    from vqtok.cli.models import format_shipped_card

    click.echo(json.dumps({"shipped": shipped.card, "model": card}, indent=1) if as_json
               else format_shipped_card(shipped) + "\n\n" + format_card(card))
