"""`vqtok decompress X.vqz -o CODES`: prior-coded token files (one, an archive, or a folder of them) back to
NAME.npy/.npz and sidecars."""

from __future__ import annotations

from pathlib import Path

import click

from vqtok.cli.common import friendly_errors
from vqtok.errors import VqtokError


@click.command("decompress")
@click.argument("vqz", type=click.Path(path_type=Path))
@click.option("-o", "--out", required=True, type=click.Path(path_type=Path),
              help="Output token file: NAME.npy (one level) or NAME.npz (VQ-VAE-2), its sidecar written beside "
                   "it; for an archive or a VQZ folder the output folder.")
@click.option("-p", "--prior", type=click.Path(path_type=Path),
              help="The prior that compressed it (default: where it was at compression, recorded in the file).")
@click.option("--force", is_flag=True, help="Overwrite existing outputs.")
@friendly_errors
def command(vqz: Path, out: Path, prior: Path | None, force: bool) -> None:
    """Decompress VQZ (written by vqtok compress), or a folder of them, into the token files they were made from.

    An archive (a folder compressed to one .vqz) decompresses into the folder -o, as it was laid out. The prior
    must be the one that compressed them (its fingerprint is in each file); a truncated or corrupted file,
    another prior or a newer format version is an error, and nothing is written.

    \b
    Examples:
      vqtok decompress 0_george_0.vqz -o 0_george_0.npy
      vqtok decompress img.vqz -p runs/mnist_prior -o img.npy
      vqtok decompress mnist_codes.vqz -p mnist-prior -o mnist_codes/
      vqtok decompress mnist_vqz/ -p mnist-prior -o mnist_codes/
    """
    from vqtok.data.audio import list_files
    from vqtok.registry import names
    from vqtok.prior.coding import SUFFIX, check_prior, decode_files, read_vqz
    from vqtok.prior.generate import load_prior_run
    from vqtok.tokenizer.codes import codes_suffix, sidecar_path, write_codes

    inputs = list_files(vqz, (SUFFIX,)) if vqz.is_dir() else [vqz]
    if not inputs:
        raise VqtokError(f"{vqz}: no {SUFFIX} files in this folder")
    files = [read_vqz(p) for p in inputs]  # every file read and checked before anything is written
    if vqz.is_dir():
        archives = [(p, f) for p, f in zip(inputs, files) if f.header.is_archive]
        if archives:
            path, file = archives[0]
            raise VqtokError(f"{path}: an archive of {len(file.header.entries)} token files; decompress it on "
                             "its own")
        outputs = [[out / p.relative_to(vqz).with_suffix(codes_suffix(len(f.header.codebook_sizes)))]
                   for p, f in zip(inputs, files)]
    elif files[0].header.is_archive:
        if out.suffix in (".npy", ".npz", SUFFIX):
            raise VqtokError(f"{out}: {vqz} is an archive of {len(files[0].header.entries)} token files; -o is "
                             "the folder to write them to")
        outputs = [[out / entry.name for entry in files[0].header.entries]]
    else:
        outputs = [[out]]
    existing = [p for paths in outputs for o in paths for p in (o, sidecar_path(o)) if p.exists()]
    if existing and not force:
        raise VqtokError(f"{existing[0]}: already exists; pass --force to overwrite it or choose another -o")
    recorded = files[0].header.prior_path
    where = prior if prior is not None else Path(recorded or "")
    if not str(where) or not (where.exists() or str(where) in names("prior")):
        raise VqtokError(f"{inputs[0]}: its prior ({recorded or 'not recorded'}) is not there; pass -p PRIOR")
    priors, tok, _ = load_prior_run(where, device="cpu")
    for path, file in zip(inputs, files):
        check_prior(file, priors, str(path))
    decoded = decode_files(priors, files)
    n = 0
    for paths, file, entries in zip(outputs, files, decoded):
        for path, entry, levels in zip(paths, file.header.entries, entries):
            path.parent.mkdir(parents=True, exist_ok=True)
            write_codes(path, levels if len(levels) > 1 else levels[0], tok, entry.source, entry.label)
            n += sum(c.size for c in levels)
    count = sum(map(len, outputs))
    click.echo(f"wrote {out} ({n} codes in {count} file(s))", err=True)
