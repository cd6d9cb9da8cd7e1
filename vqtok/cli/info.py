"""`vqtok info PATH`: a tokenizer's model card, a shipped model's card, or what a codes file holds."""

from __future__ import annotations

import json
import math
from pathlib import Path

import click

from vqtok.cli.common import friendly_errors
from vqtok.errors import VqtokError


@click.command("info")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@friendly_errors
def command(path: Path, as_json: bool) -> None:
    """Show the model card of a TOKENIZER (.safetensors, run folder or shipped name) or of a prior (its
    .safetensors or a shipped name), the contents of a CODES file (.npy/.npz), or the rate of a prior-coded
    token file (.vqz: bits per code, ratio to the raw codes).

    A shipped model's card adds its training data, licences, recipe and measured quality. The card lists the architecture, parameter count, sample rate, downsampling, frame rate and
    codebook size per level, bitrate, tokens per second, and the training recipe and step.

    \b
    Examples:
      vqtok info speech-16k
      vqtok info runs/speech/tokenizer.safetensors
      vqtok info speech.npy
      vqtok info runs/mnist/tokenizer.safetensors --json
      vqtok info 0_george_0.vqz
      vqtok info runs/speech_lm_prior/prior.safetensors
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
    if path.is_file() and path.suffix == ".safetensors" and is_prior_file(path):
        card = prior_card(path)
        click.echo(json.dumps(card, indent=1) if as_json else format_prior_card(card))
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


SIZE_FIELDS = ("dim", "channels", "layers", "heads", "kernel_size", "max_len")  # the networks' size, as stored


def is_prior_file(path: Path) -> bool:
    """Whether a .safetensors file's header says it is a prior (read without torch, as the registry reads it)."""
    from vqtok import registry

    try:
        return registry.ROLES.get(registry.header(path).get("format")) == "prior"
    except VqtokError:
        return False  # the tokenizer reader says what is wrong with it


def prior_card(path: Path) -> dict:
    """What a prior file holds: its network, the codes it models and how it reads them, how it was trained."""
    from vqtok.prior.checkpoint import load_prior
    from vqtok.tokenizer.codes import describe_tokenizer

    prior = load_prior(path)
    lay, config = prior.layout, prior.config
    return {"path": str(path), "network": lay.network, "parameters": sum(p.numel() for p in prior.parameters()),
            "config": {k: v for k, v in config.items() if v is not None}, "level": lay.level,
            "codebook_size": lay.codebook_size, **lay.card(), "classes": lay.num_classes, "guidance": lay.guidance,
            "tokenizer": describe_tokenizer(prior.tokenizer), "train": prior.train_info}


def format_prior_card(card: dict) -> str:
    """A prior's card as aligned `key value` lines."""
    size = ", ".join(f"{key} {card['config'][key]}" for key in SIZE_FIELDS if key in card["config"])
    if card["shape"]:
        reads = f"maps of {card['shape'][0]}x{card['shape'][1]} codes, raster order"
    else:
        reads = "sequences" + (", frame by frame over {} codebooks".format(card["codebooks"])
                               if card["codebooks"] > 1 else "") + (", ending with EOS" if card["eos"] else "")
        if card["window"]:
            reads += f"; in windows of {card['window']} codes re-reading {card['context']}"
    train = card["train"]
    lines = [f"prior         {card['path']}",
             f"network       {card['network']} ({size}), {card['parameters']:,} parameters",
             f"models        {'' if card['level'] == 'codes' else card['level'] + ' '}codes "
             f"(K={card['codebook_size']}) of {card['tokenizer']}",
             f"reads         {reads}"]
    if card["classes"]:
        lines.append(f"classes       {card['classes']} (guidance {card['guidance']:g} by default)")
    if train:
        nll = train.get("best_nll")
        best = f"; best validation NLL {nll:.4f} nats ({nll / math.log(2):.3f} bits) per code" if nll else ""
        lines.append(f"training      recipe {train.get('recipe')}, step {train.get('step')}{best}")
    return "\n".join(lines)
