"""`vqtok compress CODES -p PRIOR -o X.vqz`: a token file's codes arithmetic-coded under a prior."""

from __future__ import annotations

import time
from pathlib import Path

import click

from vqtok.cli.common import friendly_errors
from vqtok.errors import VqtokError


@click.command("compress")
@click.argument("codes", type=click.Path(path_type=Path))
@click.option("-p", "--prior", required=True, type=click.Path(path_type=Path),
              help="Prior run folder (or prior .safetensors) trained on the tokenizer that wrote CODES.")
@click.option("-o", "--out", required=True, type=click.Path(path_type=Path), help="Output .vqz file.")
@click.option("--label", type=int, help="Class to code under (default: the token file's label; without one, a "
                                        "prior trained with cond_dropout codes it under its null class).")
@click.option("--force", is_flag=True, help="Overwrite an existing output.")
@friendly_errors
def command(codes: Path, prior: Path, out: Path, label: int | None, force: bool) -> None:
    """Compress a token file (NAME.npy/.npz written by vqtok encode, with its sidecar) under PRIOR.

    Each code is arithmetic-coded with the probability the prior gives it after the codes before it (and the
    class), so the file takes about the prior's NLL in bits. The run's own tokenizer must be the one that
    encoded CODES. `vqtok decompress` gives back the identical token file; `vqtok info X.vqz` shows the rate.

    \b
    Examples:
      vqtok compress digits/0_george_0.npy -p runs/speech_prior -o 0_george_0.vqz
      vqtok compress img.npy -p runs/mnist_prior -o img.vqz --force
    """
    from vqtok.cli.common import setup_logging
    from vqtok.files import atomic_write
    from vqtok.prior.coding import SUFFIX, coded_class, compress
    from vqtok.prior.generate import load_prior_run
    from vqtok.tokenizer.codes import read_codes

    setup_logging()
    if out.suffix != SUFFIX:
        raise VqtokError(f"{out}: compressed token files end in {SUFFIX}")
    if out.exists() and not force:
        raise VqtokError(f"{out}: already exists; pass --force to overwrite it or choose another -o")
    priors, tok, _ = load_prior_run(prior, device="cpu")  # a run folder, a prior file or a shipped name
    file = read_codes(codes, tok)
    coded = coded_class(priors, label if label is not None else file.label, str(codes))
    start = time.perf_counter()
    data = compress(priors, tok.fingerprint, file.levels, file.label if label is None else label, coded,
                    file.source, str(prior.resolve()) if prior.exists() else str(prior))
    seconds = time.perf_counter() - start
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, lambda tmp: Path(tmp).write_bytes(data))
    n = sum(c.size for c in file.levels)
    click.echo(f"wrote {out}: {len(data)} bytes for {n} codes ({seconds:.2f} s)", err=True)
