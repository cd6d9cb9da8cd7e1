"""`vqtok export NAME_OR_PATH --onnx DIR`: a tokenizer as ONNX graphs for onnxruntime (integrations/onnx.py)."""

from __future__ import annotations

from pathlib import Path

import click

from vqtok.cli.common import friendly_errors
from vqtok.errors import VqtokError


@click.command("export")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--onnx", "onnx_dir", required=True, type=click.Path(path_type=Path, file_okay=False),
              help="Folder for encoder.onnx, decoder.onnx, postfilter.onnx (audio with a postfilter) and "
                   "tokenizer.json.")
@click.option("--force", is_flag=True, help="Overwrite graphs already in the folder.")
@friendly_errors
def command(model: Path, onnx_dir: Path, force: bool) -> None:
    """Export MODEL (a shipped name, a .safetensors file or a run folder) as ONNX graphs: the encoder with its
    code search (input -> codes), the decoder (codes -> output) and, for audio with a postfilter, the postfilter;
    batch and length axes dynamic, the config and fingerprints in each graph's metadata. Needs the onnx extra
    (pip install 'vqtok[onnx]'). python -m vqtok.integrations.ort_runner encodes and decodes files with them,
    without torch.

    \b
    Examples:
      vqtok export speech-16k --onnx onnx/speech-16k
      vqtok export runs/mnist --onnx onnx/mnist
    """
    try:
        import onnx  # noqa: F401  (the exporter writes through it)
    except ImportError:
        raise VqtokError("export needs the onnx package: pip install 'vqtok[onnx]'") from None
    from vqtok.cli.options import open_tokenizer
    from vqtok.integrations.onnx import GRAPHS

    existing = [p for p in (onnx_dir / f"{g}.onnx" for g in GRAPHS) if p.exists()]
    if existing and not force:
        raise VqtokError(f"{existing[0]}: already exists; pass --force to overwrite the graphs in {onnx_dir}")
    tok, path = open_tokenizer(model, "cpu", threads=1)
    from vqtok.integrations.onnx import OPSET, export_onnx

    written = export_onnx(tok, onnx_dir)
    click.echo(f"{path} (fingerprint {tok.fingerprint}) -> {onnx_dir}, opset {OPSET}")
    for name, file in written.items():
        click.echo(f"  {file.name:<16} {file.stat().st_size / 1e6:6.2f} MB")
