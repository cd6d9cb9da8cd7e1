"""`vqtok compress CODES -p PRIOR -o X.vqz`: token files (one, or a folder) range-coded under a prior."""

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
@click.option("-o", "--out", required=True, type=click.Path(path_type=Path),
              help="Output .vqz file (for a CODES folder: one archive of all its files), or for a CODES folder "
                   "an output folder (mirrors it, NAME.vqz each).")
@click.option("--label", type=int, help="Class to code under (default: the token file's label; without one, a "
                                        "prior trained with cond_dropout codes it under its null class).")
@click.option("--force", is_flag=True, help="Overwrite existing outputs.")
@friendly_errors
def command(codes: Path, prior: Path, out: Path, label: int | None, force: bool) -> None:
    """Compress a token file (NAME.npy/.npz written by vqtok encode, with its sidecar), or a folder of them,
    under PRIOR.

    Each code is arithmetic-coded with the probability the prior gives it after the codes before it (and the
    class), so the file takes about the prior's NLL in bits. The run's own tokenizer must be the one that
    encoded CODES. `vqtok decompress` gives back the identical token file; `vqtok info X.vqz` shows the rate.
    A folder compresses to one archive (-o NAME.vqz: all its codes one message, so the message's end and the
    header are paid once) or to a folder of .vqz files, one per token file. Its files go through a PixelCNN
    prior in batches: faster.

    \b
    Examples:
      vqtok compress digits/0_george_0.npy -p runs/speech_prior -o 0_george_0.vqz
      vqtok compress img.npy -p runs/mnist_prior -o img.vqz --force
      vqtok compress mnist_codes/ -p mnist-prior -o mnist_codes.vqz
      vqtok compress mnist_codes/ -p mnist-prior -o mnist_vqz/
    """
    from vqtok.cli.common import setup_logging
    from vqtok.data.audio import list_files
    from vqtok.files import atomic_write
    from vqtok.prior.coding import SUFFIX, CodedItem, check_fit, coded_class, compress_archive, compress_many
    from vqtok.prior.generate import load_prior_run
    from vqtok.tokenizer.checkpoint import reads_codes_of
    from vqtok.tokenizer.codes import (CODE_SUFFIXES, check_shapes, codes_suffix, describe_tokenizer, read_codes,
                                       tokenizer_summary)

    setup_logging()
    archive = codes.is_dir() and out.suffix == SUFFIX
    if codes.is_dir():
        inputs = list_files(codes, CODE_SUFFIXES)
        if not inputs:
            raise VqtokError(f"{codes}: no token files (.npy/.npz) in this folder")
        outputs = [out] if archive else [out / p.relative_to(codes).with_suffix(SUFFIX) for p in inputs]
        twice = {o for o in outputs if outputs.count(o) > 1}
        if twice:
            raise VqtokError(f"{sorted(twice)[0]}: two token files (.npy and .npz) would both compress to it")
    else:
        if out.suffix != SUFFIX:
            raise VqtokError(f"{out}: compressed token files end in {SUFFIX}")
        inputs, outputs = [codes], [out]
    existing = [o for o in outputs if o.exists()]
    if existing and not force:
        raise VqtokError(f"{existing[0]}: already exists; pass --force to overwrite it or choose another -o")
    priors, tok, _ = load_prior_run(prior, device="cpu")  # a run folder, a prior file or a shipped name
    items = []
    for path in inputs:  # every input read and checked before anything is written
        file = read_codes(path)  # read_codes(path, tok) would check the tokenizer too, but name the wrong fix
        made_by = file.meta["tokenizer"]
        if not reads_codes_of(tok, made_by):
            raise VqtokError(f"{path}: made by {describe_tokenizer(made_by)}, but the prior {prior} models the codes "
                             f"of {describe_tokenizer(tokenizer_summary(tok))}; pass a prior trained on the codes "
                             "of the tokenizer that encoded it (-p)")
        check_shapes(file, tok)
        check_fit(priors, [c.shape for c in file.levels], str(path))
        cls = file.label if label is None else label
        # the entry's path in the folder, with the suffix decompress writes (.npy / .npz, lower case)
        name = path.relative_to(codes).with_suffix(codes_suffix(len(file.levels))).as_posix() if archive else None
        items.append(CodedItem(file.levels, cls, coded_class(priors, cls, str(path)), file.source, name))
    named = [item.name for item in items if item.name]
    twice = sorted({n for n in named if named.count(n) > 1})
    if twice:
        raise VqtokError(f"{codes}: two token files would both be {twice[0]} in the archive")
    where = str(prior.resolve()) if prior.exists() else str(prior)
    start = time.perf_counter()
    files = ([compress_archive(priors, tok.fingerprint, items, where)] if archive
             else compress_many(priors, tok.fingerprint, items, where))
    seconds = time.perf_counter() - start
    for path, data in zip(outputs, files):
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda tmp, data=data: Path(tmp).write_bytes(data))
    n = sum(c.size for item in items for c in item.levels)
    what = f"an archive of {len(items)} token files" if archive else f"{len(files)} file(s)"
    click.echo(f"wrote {out}: {sum(map(len, files))} bytes for {n} codes in {what} ({seconds:.2f} s)", err=True)
