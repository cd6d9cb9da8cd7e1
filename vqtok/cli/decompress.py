"""`vqtok decompress X.vqz -o CODES`: a prior-coded token file back to NAME.npy/.npz and its sidecar."""

from __future__ import annotations

from pathlib import Path

import click

from vqtok.cli.common import friendly_errors
from vqtok.errors import VqtokError


@click.command("decompress")
@click.argument("vqz", type=click.Path(path_type=Path))
@click.option("-o", "--out", required=True, type=click.Path(path_type=Path),
              help="Output token file: NAME.npy (one level) or NAME.npz (VQ-VAE-2); its sidecar is written beside it.")
@click.option("-p", "--prior", type=click.Path(path_type=Path),
              help="The prior that compressed it (default: where it was at compression, recorded in the file).")
@click.option("--force", is_flag=True, help="Overwrite an existing output.")
@friendly_errors
def command(vqz: Path, out: Path, prior: Path | None, force: bool) -> None:
    """Decompress VQZ (written by vqtok compress) into the token file it was made from.

    The prior must be the one that compressed it (its fingerprint is in the file); a truncated or corrupted
    file, another prior or a newer format version is an error, and nothing is written.

    \b
    Examples:
      vqtok decompress 0_george_0.vqz -o 0_george_0.npy
      vqtok decompress img.vqz -p runs/mnist_prior -o img.npy
    """
    from vqtok.pretrained.registry import names
    from vqtok.prior.coding import check_prior, decode_payload, read_vqz
    from vqtok.prior.generate import load_prior_run
    from vqtok.tokenizer.codes import sidecar_path, write_codes

    file = read_vqz(vqz)
    existing = [p for p in (out, sidecar_path(out)) if p.exists()]
    if existing and not force:
        raise VqtokError(f"{existing[0]}: already exists; pass --force to overwrite it or choose another -o")
    where = prior if prior is not None else Path(file.header.prior_path or "")
    if not str(where) or not (where.exists() or str(where) in names("prior")):
        raise VqtokError(f"{vqz}: its prior ({file.header.prior_path or 'not recorded'}) is not there; "
                         "pass -p PRIOR")
    priors, tok, _ = load_prior_run(where, device="cpu")
    check_prior(file, priors, str(vqz))
    levels = decode_payload(priors, file.header, file.payload)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_codes(out, levels if len(levels) > 1 else levels[0], tok, file.header.source, file.header.label)
    click.echo(f"wrote {out} ({sum(c.size for c in levels)} codes)", err=True)
