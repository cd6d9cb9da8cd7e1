"""`vqtok models`: the tokenizers and priors shipped with vqtok, as a table of their cards."""

from __future__ import annotations

import json

import click

from vqtok.cli.common import friendly_errors


def _input(card: dict) -> str:
    if card.get("modality") == "audio":
        return f"{card['sample_rate'] / 1000:g} kHz audio" if card.get("sample_rate") else "audio"
    size = card.get("image_size")
    return f"{size[0]}x{size[1]} image" if size else "image"


def _codes(card: dict) -> str:
    books = "+".join(str(k) for k in card.get("codebooks", []))
    if card.get("frame_rate"):
        per_frame = f" x {card['codebooks_per_frame']}" if card.get("codebooks_per_frame") else ""  # residual stages
        return f"{'+'.join(f'{r:g}' for r in card['frame_rate'])}/s{per_frame}, K={books}"
    if card.get("code_shape"):
        return f"{' + '.join('x'.join(map(str, s)) for s in card['code_shape'])}, K={books}"
    return f"K={books}" if books else ""


def _rate(card: dict) -> str:
    if card.get("bitrate"):
        return f"{card['bitrate']:g} bit/s"
    if card.get("bits_per_image"):
        return f"{card['bits_per_image']:g} bit/image"
    return ""


def _quality(figures: dict) -> str:
    return ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                     for k, v in figures.items() if k not in ("split", "items"))


def format_table(models) -> str:
    """One row per shipped model."""
    header = ("name", "kind", "input", "codes", "bitrate", "params", "MB", "trained on")
    rows = [header]
    for m in models:
        c = m.card
        kind = c.get("kind", m.role) + (f" ({c['network']} over {c['tokenizer']})" if c.get("tokenizer") else "")
        data = "; ".join(f"{d['name']} ({d['licence']})" for d in c.get("training_data", []))
        rows.append((m.name, kind, _input(c), _codes(c), _rate(c), f"{c.get('parameters', 0) / 1e6:.2f}M",
                     f"{m.megabytes:.1f}", data))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header) - 1)]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(r, widths)) + "  " + r[-1] for r in rows)


def _level(model) -> str:
    """", scaled to L dBFS speech level by vqtok encode" for a tokenizer with a level_db (its config), and the
    postfilter decode ends with, if any; else ""."""
    from vqtok import registry

    config = json.loads(registry.header(model.path).get("config") or "{}")
    level, post = config.get("level_db"), config.get("postfilter")
    return ((f", scaled to {level:g} dBFS speech level by vqtok encode (--as-is: not)" if level is not None else "")
            + (f"; decoded through a spectral sharpening postfilter, exponent {post:g} (--no-postfilter: not)"
               if post is not None else ""))


def format_shipped_card(model) -> str:
    """A shipped model's card as aligned `key value` lines."""
    c = model.card
    store = c.get("storage", {})
    lines = [f"name          {model.name} ({c.get('kind', model.role)}, {c.get('modality', '?')})",
             f"description   {c.get('description', '')}",
             f"input         {_input(c)}" + _level(model)]
    if model.role == "prior":
        classes = f", {c['classes']} classes" if c.get("classes") else ""
        lines.append(f"models        codes of the shipped tokenizer {c.get('tokenizer')} ({model.fingerprint}; "
                     f"{c.get('network')}{classes})")
    lines += [f"codes         {_codes(c)}",
              f"bitrate       {_rate(c) or '-'}",
              f"parameters    {c.get('parameters', 0):,} ({store.get('dtype', '?')} storage, {model.megabytes:.2f} MB)"]
    if model.role != "prior":
        lines += [f"fingerprint   {model.fingerprint}" + (f" (trained as {store['source_fingerprint']})"
                                                       if store.get("source_fingerprint") not in (None, model.fingerprint)
                                                       else "")]
        if model.same_codes_as:
            lines.append(f"same codes as {', '.join(model.same_codes_as)} (earlier versions: their token files "
                         "decode with this one)")
    lines += [f"recipe        {c.get('recipe')}, step {c.get('step')} (vqtok train {c.get('recipe')} rebuilds it)"]
    quality = c.get("quality", {})
    lines.append(f"quality       {quality.get('split', '')}: {_quality(quality)}")
    if c.get("reported"):
        lines.append(f"reported      {_quality(c['reported'])}" + (f" ({c['reported']['split']})"
                                                                     if c["reported"].get("split") else ""))
    for i, d in enumerate(c.get("training_data", [])):
        credit = f"; {d['attribution']}" if d.get("attribution") else ""
        url = f" <{d['url']}>" if d.get("url") else ""
        lines.append(f"{'training data' if i == 0 else '':<13} {d['name']} ({d['licence']}{credit}){url}")
    return "\n".join(lines)


@click.command("models")
@click.option("--json", "as_json", is_flag=True, help="Print the cards as JSON.")
@friendly_errors
def command(as_json: bool) -> None:
    """List the tokenizers and priors shipped with vqtok (usable by name: -m NAME, tokenizer=NAME).

    \b
    Examples:
      vqtok models
      vqtok info speech-16k
      vqtok encode speech.wav -m speech-8k
    """
    from vqtok.pretrained import models

    shipped = models()
    if as_json:
        click.echo(json.dumps({m.name: m.card for m in shipped}, indent=1))
    elif not shipped:
        click.echo("no models are shipped with this installation of vqtok")
    else:
        click.echo(format_table(shipped))
