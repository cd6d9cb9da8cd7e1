"""`vqtok eval -m TOKENIZER DATA`: round-trip metrics on a folder or a recipe's validation set."""

from __future__ import annotations

import json
from pathlib import Path

import click

from vqtok.cli.common import friendly_errors, setup_logging
from vqtok.cli.options import device_option, open_tokenizer, threads_option, tokenizer_option
from vqtok.errors import VqtokError


@click.command("eval")
@click.argument("data", type=click.Path(path_type=Path))
@tokenizer_option
@click.option("--json", "json_path", type=click.Path(path_type=Path), help="Also write the results here as JSON.")
@click.option("--max-items", type=click.IntRange(min=1), help="Evaluate on the first N items only.")
@click.option("--batch-size", default=1, show_default=True, type=click.IntRange(min=1),
              help="Items encoded together (the codes do not depend on it).")
@click.option("--no-pesq", is_flag=True, help="Skip PESQ (slow on long sets).")
@click.option("--no-stoi", is_flag=True, help="Skip STOI.")
@device_option
@threads_option
@friendly_errors
def command(data: Path, model: Path, json_path: Path | None, max_items: int | None, batch_size: int,
            no_pesq: bool, no_stoi: bool, device: str, threads: int | None) -> None:
    """Encode and decode DATA (a folder, or a recipe .yaml whose validation set is used) and score it.

    Images: MSE and PSNR. Audio: SI-SNR, log-mel distance, STOI and PESQ (the 'eval' extra:
    pip install "vqtok[eval]"). Both: codebook usage, perplexity and entropy per level, and bitrate.

    \b
    Examples:
      vqtok eval -m runs/speech/tokenizer.safetensors ../shared/data/fsdd/recordings --max-items 200
      vqtok eval -m runs/mnist/tokenizer.safetensors recipes/mnist.yaml --json mnist_eval.json
    """
    from vqtok.evaluate import evaluate, format_result, iter_folder, iter_recipe
    from vqtok.files import atomic_write

    setup_logging()
    tok, _ = open_tokenizer(model, device, threads)
    if not data.exists():
        raise VqtokError(f"{data}: no such folder or recipe file")
    if data.is_file() and data.suffix in (".yaml", ".yml"):
        items = iter_recipe(tok, data, max_items)
    elif data.is_dir():
        items = iter_folder(tok, data, max_items)
    else:
        raise VqtokError(f"{data}: give a folder of audio/images or a recipe .yaml")
    result = evaluate(tok, items, with_pesq=not no_pesq, with_stoi=not no_stoi, batch_size=batch_size)
    result["data"] = str(data)
    click.echo(format_result(result))
    if json_path is not None:
        text = json.dumps(result, indent=1)
        try:
            atomic_write(json_path, lambda tmp: Path(tmp).write_text(text))
        except OSError as err:
            raise VqtokError(f"{json_path}: cannot write ({err.strerror or err})") from None
        click.echo(f"wrote {json_path}", err=True)
