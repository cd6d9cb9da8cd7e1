"""Options shared by encode, decode, info and eval: the tokenizer (file, run folder or shipped name), the device."""

from __future__ import annotations

from pathlib import Path

import click

from vqtok.errors import VqtokError

tokenizer_option = click.option(
    "-m", "--model", "model", required=True, type=click.Path(path_type=Path),
    help="Tokenizer: a shipped name (vqtok models), a .safetensors file or a run folder of vqtok train.")


def optional_tokenizer_option(default_help: str):
    """-m for commands that find a tokenizer themselves when it is not given."""
    return click.option("-m", "--model", "model", type=click.Path(path_type=Path), default=None,
                        help="Tokenizer: a shipped name (vqtok models), a .safetensors file or a run folder. "
                             + default_help)


device_option = click.option(
    "--device", default="auto", show_default=True, help="auto (CUDA when present), cpu, cuda or cuda:N.")
threads_option = click.option(
    "--threads", type=click.IntRange(min=1), default=None,
    help="torch CPU threads (default: torch's choice; 1 is often faster on a busy machine).")


def open_tokenizer(path: Path, device: str = "cpu", threads: int | None = None):
    """load_tokenizer with a device name; every failure is a one-line VqtokError."""
    import torch

    from vqtok.device import pick_device
    from vqtok.tokenizer.checkpoint import load_tokenizer, tokenizer_file

    if threads:
        torch.set_num_threads(threads)

    path = tokenizer_file(path)
    return load_tokenizer(path, pick_device(device)), path
