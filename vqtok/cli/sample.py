"""`vqtok sample PRIOR -n 64 [--label 3] [-o samples.png | -o DIR]`: sample codes from a prior and decode them."""

from __future__ import annotations

from pathlib import Path

import click

from vqtok.cli.common import friendly_errors, setup_logging
from vqtok.cli.options import device_option
from vqtok.errors import VqtokError


@click.command("sample")
@click.argument("prior", type=click.Path(path_type=Path))
@click.option("-n", "--num", "n", default=64, show_default=True, type=click.IntRange(min=1), help="Samples to draw.")
@click.option("--label", type=int, help="Class to sample (class-conditional priors). Default: classes drawn "
                                        "from the training frequencies, i.e. unconditional samples.")
@click.option("-o", "--out", type=click.Path(path_type=Path),
              help="Images: a .png grid (default samples.png) or a folder (DIR/samples.png). Audio: a folder of "
                   "WAV files and spectrograms.png (default samples/).")
@click.option("--codes", "codes_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Also write each sample's codes here (NAME.npy/.npz + sidecar, readable by vqtok decode).")
@click.option("-m", "--model", "tokenizer", type=click.Path(path_type=Path),
              help="Tokenizer to decode with (default: the copy in the prior's run folder, or the shipped tokenizer "
                   "it models); it must be the one the prior was trained on.")
@click.option("--temperature", default=1.0, show_default=True, type=click.FloatRange(min=0),
              help="Softmax temperature (0: greedy).")
@click.option("--top-k", type=click.IntRange(min=1), help="Keep the k most likely codes at each step.")
@click.option("--top-p", type=click.FloatRange(0, 1, min_open=True), help="Nucleus sampling: keep this much mass.")
@click.option("--guidance", type=click.FloatRange(min=0),
              help="Classifier-free guidance weight w: logits l_u + w (l_c - l_u) (1: plain conditional). "
                   "Default: the prior's recipe (model.guidance). Needs a prior trained with model.cond_dropout.")
@click.option("--seed", default=0, show_default=True, help="Random seed (the same seed gives the same samples).")
@click.option("--nrow", type=click.IntRange(min=1), help="Images per row of the grid (default 8).")
@click.option("--seconds", type=click.FloatRange(min=0, min_open=True),
              help="Audio: seconds per sample for a prior without an end token (windows, residual codebooks; "
                   "default: one window); for one with it, the longest a sample may run.")
@device_option
@click.option("--force", is_flag=True, help="Overwrite existing outputs.")
@friendly_errors
def command(prior: Path, n: int, label: int | None, out: Path | None, codes_dir: Path | None, tokenizer: Path | None,
            temperature: float, top_k: int | None, top_p: float | None, guidance: float | None, seed: int,
            nrow: int | None, seconds: float | None, device: str, force: bool) -> None:
    """Sample from PRIOR (a prior run folder, a prior .safetensors or a shipped name such as mnist-prior)
    and decode through its tokenizer.

    A VQ-VAE-2 is sampled top first, then bottom given the top. Audio priors stop each sample at its
    end-of-sequence token, so clips have natural lengths. With --guidance W (a prior trained with
    model.cond_dropout) each step mixes the conditional and unconditional logits; without --label the
    class is drawn from the training frequencies first, then guided.

    \b
    Examples:
      vqtok sample mnist-prior -n 16 --label 3 -o threes.png
      vqtok sample runs/mnist_prior -n 64 -o samples.png
      vqtok sample runs/mnist_prior -n 16 --label 3 -o threes.png --codes threes/
      vqtok sample runs/speech_prior -n 10 --label 7 -o sevens/ --temperature 0.9
      vqtok sample runs/mnist_prior -n 64 --guidance 3 -o guided.png
      vqtok sample runs/speech_lm_prior -n 4 --seconds 5 -o speech/
    """
    import torch

    from vqtok.device import pick_device
    from vqtok.modality import modality_of
    from vqtok.prior.generate import draw_labels, load_prior_run, per_sample, sample_codes
    from vqtok.tokenizer.codes import codes_suffix, write_codes

    setup_logging()
    if not prior.exists() and ("/" in str(prior) or prior.suffix):
        raise VqtokError(f"{prior}: no such prior; give a prior run folder, a prior .safetensors or a shipped name")
    priors, tok, _ = load_prior_run(prior, tokenizer, pick_device(device))
    modality = modality_of(tok.config)
    names = [f"sample_{i:03d}" for i in range(n)]
    files = modality.sample_files(out, names)
    targets = list(files)
    if codes_dir is not None:
        targets += [codes_dir / (name + codes_suffix(tok.levels)) for name in names]
    existing = [t for t in targets if t.exists()]
    if existing and not force:
        raise VqtokError(f"{existing[0]}: already exists; pass --force to overwrite it or choose another -o")

    gen = torch.Generator().manual_seed(seed)
    labels = draw_labels(priors[0], n, label, gen)
    if seconds is not None and tok.sample_rate is None:
        raise VqtokError("--seconds sets the length of audio samples; this prior models image codes")
    length = None if seconds is None else tok.codebooks * max(1, round(seconds * tok.sample_rate / tok.hop))
    levels = sample_codes(priors, n, labels, temperature, top_k, top_p, gen, guidance=guidance, max_length=length)
    decoded = modality.decode_samples(tok, levels)
    titles = [name + ("" if labels is None else f" (label {int(labels[i])})") for i, name in enumerate(names)]
    click.echo(modality.write_samples(files, decoded, tok, titles, nrow), err=True)
    if codes_dir is not None:
        codes_dir.mkdir(parents=True, exist_ok=True)
        for i, name in enumerate(names):
            codes = per_sample(levels, i)
            write_codes(codes_dir / (name + codes_suffix(tok.levels)), codes, tok,
                        modality.sample_source(tok, codes), None if labels is None else int(labels[i]))
        click.echo(f"wrote {n} codes files to {codes_dir}", err=True)
