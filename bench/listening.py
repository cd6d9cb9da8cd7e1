"""Write the listening page: speech through the shipped models and classical codecs, to hear and to look at.

    python bench/listening.py [FOLDER] [--n 10] [--max-seconds 4] [--out docs/listen]
                              [--figure docs/assets/overview.png]

FOLDER (default ../shared/data/speech/test: 10 speakers no model here has heard) is cut into pieces as
bench/speech_codecs.py cuts it (`--n`, `--max-seconds`), and each piece goes through speech-16k, speech-lm-16k (its
first 2, 4 and 8 codebooks) and the Opus wideband rows at 16 kHz, and through speech-8k and Codec 2 3200 at 8 kHz, with speech_codecs.py's own round trips.
OUT/index.md gets, per piece, a player and a spectrogram of every version with its PESQ and STOI, then the tables
of per-piece scores and their means (`python bench/speech_codecs.py FOLDER --rate 16000 --n N --max-seconds S
--tokenizer speech-16k` prints the same means, and likewise at 8 kHz with speech-8k), then MNIST test digits, their
mnist reconstructions and mnist-prior samples. The players are Ogg Opus at about 32 kbit/s (small files Chromium and
Firefox play); the scores are those of each codec's own output. --figure also writes the README's overview: one
piece's spectrograms and the MNIST grids in one PNG.
"""

from __future__ import annotations

import argparse
import html
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ helpers, run from a checkout

from speech_codecs import CLASSICAL, DEFAULT_FOLDER, Codec, tokenizer_codecs  # noqa: E402
from speech_protocol import EvalPiece, evaluate_codec, make_folder_pieces  # noqa: E402

from vqtok import load_tokenizer  # noqa: E402
from vqtok.data.audio import resample  # noqa: E402
from vqtok.data.mnist import load_mnist  # noqa: E402
from vqtok.plots import image_grid, save_png  # noqa: E402
from vqtok.modality import modality_of  # noqa: E402
from vqtok.prior.generate import load_prior_run, sample_codes  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
MNIST_ROOT = REPO.parent / "shared" / "data" / "mnist"
PAGE_RATE = 16000  # players and spectrograms: the narrow-band versions are shown at 16 kHz, their top half empty
CLASSICAL_ROWS = {16000: ("Opus 8 (hard CBR)", "Opus 6 (hard CBR)"), 8000: ("Codec 2 3200",)}
MODELS = {16000: "speech-16k", 8000: "speech-8k"}
# the multi-codebook model at some of its bitrates (prefixes of its residual codebooks), beside speech-16k
PREFIX_MODELS = {16000: ("speech-lm-16k", [2, 4, 8]), 8000: None}


@dataclass
class Version:
    """One codec's output for every piece (at the page's rate) and its scores (at the codec's table rate)."""

    name: str
    kbps: float
    table_rate: int
    outputs: list[np.ndarray]
    scores: dict


def run_codecs(folder: Path, n: int, max_seconds: float) -> tuple[list[EvalPiece], list[Version]]:
    """The pieces at 16 kHz and every version of them: speech_codecs.py's rows at 16 and 8 kHz."""
    pieces = make_folder_pieces(folder, PAGE_RATE, max_seconds, n)
    versions = []
    for rate in (16000, 8000):
        table_pieces = pieces if rate == PAGE_RATE else make_folder_pieces(folder, rate, max_seconds, n)
        codecs: list[Codec] = tokenizer_codecs(MODELS[rate], rate)
        if PREFIX_MODELS[rate]:
            name, prefixes = PREFIX_MODELS[rate]
            codecs += tokenizer_codecs(name, rate, codebooks=prefixes)
        codecs += [c for c in CLASSICAL[rate] if c.name in CLASSICAL_ROWS[rate]]
        for codec in codecs:
            missing = [t for t in codec.tools if shutil.which(t) is None]
            if missing:
                print(f"{codec.name}: skipped, {', '.join(missing)} not installed", file=sys.stderr)
                continue
            outputs: list[np.ndarray] = []

            def keep(audio: np.ndarray, fn=codec.fn, outputs=outputs) -> np.ndarray:
                out = fn(audio)
                outputs.append(out if rate == PAGE_RATE else resample(out, rate, PAGE_RATE))
                return out

            scores = evaluate_codec(keep, table_pieces, rate)
            name = version_name(codec, rate)
            versions.append(Version(name, codec.bitrate / 1000, rate, outputs, scores))
            print(f"{name}: PESQ-{pesq_mode(rate)} {scores[f'pesq_{pesq_mode(rate)}']:.2f}, "
                  f"STOI {scores['stoi']:.3f}", file=sys.stderr)
    return pieces, versions


def version_name(codec: Codec, rate: int) -> str:
    """"speech-16k", "speech-lm-16k x4" (its first 4 codebooks), "Opus 6", ..."""
    if not codec.codebook_sizes:
        return codec.name.replace(" (hard CBR)", "")
    prefix = re.search(r"\((\d+) of \d+ codebooks\)", codec.name)
    return f"{PREFIX_MODELS[rate][0]} x{prefix.group(1)}" if prefix else MODELS[rate]


def pesq_mode(rate: int) -> str:
    return "wb" if rate == 16000 else "nb"


def log_power(audio: np.ndarray) -> np.ndarray:
    """(F, N) dB: power in 32 ms Hann windows at 16 kHz (hop 8 ms), the highest frequency in the top row."""
    x = torch.from_numpy(np.ascontiguousarray(audio, np.float32))
    power = torch.stft(x, 512, 128, window=torch.hann_window(512), return_complex=True).abs().square()
    return 10 * torch.log10(power + 1e-10).numpy()[::-1]


def spectrogram_rgb(audio: np.ndarray, top_db: float) -> np.ndarray:
    """(F, N, 3) uint8 of :func:`log_power`, the colour scale spanning 80 dB under ``top_db``."""
    scaled = np.clip((log_power(audio) - (top_db - 80)) / 80, 0, 1)
    return (plt.get_cmap("magma")(scaled)[..., :3] * 255).astype(np.uint8)


def save_spectrogram(audio: np.ndarray, top_db: float, path: Path, size=(320, 96)) -> None:
    """A small PNG of the spectrogram: resized and reduced to 64 colours so that a page of them stays light."""
    image = Image.fromarray(spectrogram_rgb(audio, top_db)).resize(size, Image.BILINEAR)
    image.quantize(64).save(path, optimize=True)


def write_audio(audio: np.ndarray, path: Path) -> None:
    """Ogg Opus at 16 kHz: 4 kB a second, and every current browser plays it."""
    sf.write(path, np.clip(audio, -1, 1).astype(np.float32), PAGE_RATE, format="OGG", subtype="OPUS",
             compression_level=0.9)  # ~32 kbit/s: transparent for 16 kHz speech


def piece_label(piece: EvalPiece) -> str:
    speaker = Path(piece.files[0]).name.split("-")[0]
    return f"{Path(piece.files[0]).name} from {piece.start:.1f} s (speaker {speaker})"


def score_cell(version: Version, i: int) -> str:
    mode = pesq_mode(version.table_rate)
    per = version.scores["per_piece"]
    return f"PESQ-{mode} {per[f'pesq_{mode}'][i]:.2f}, STOI {per['stoi'][i]:.3f}"


def piece_section(i: int, piece: EvalPiece, versions: list[Version], media: Path) -> list[str]:
    """One piece: a table of rows (version, player, spectrogram, scores) in raw HTML."""
    top_db = max(float(log_power(a).max()) for a in [piece.audio, *(v.outputs[i] for v in versions)])
    rows = []
    for key, label, audio, cell in [("original", "original (16 kHz)", piece.audio, ""),
                                    *((v.name.lower().replace(" ", "-"), f"{v.name}, {v.kbps:g} kbit/s",
                                       v.outputs[i], score_cell(v, i)) for v in versions)]:
        stem = f"p{i + 1:02d}-{key}"
        write_audio(audio, media / f"{stem}.ogg")
        save_spectrogram(audio, top_db, media / f"{stem}.png")
        rows.append(f'<tr><td>{html.escape(label)}</td>'
                    f'<td><audio controls preload="metadata" src="media/{stem}.ogg"></audio></td>'
                    f'<td><img src="media/{stem}.png" alt="spectrogram: {html.escape(label)}" width="320" '
                    f'height="96"></td><td>{cell}</td></tr>')
    return [f"### Piece {i + 1}: {html.escape(piece_label(piece))}", "",
            '<table class="listen"><thead><tr><th>version</th><th>listen</th><th>spectrogram (0-8 kHz)</th>'
            "<th>scores</th></tr></thead><tbody>", *rows, "</tbody></table>", ""]


def score_table(pieces: list[EvalPiece], versions: list[Version], rate: int) -> list[str]:
    """Per-piece PESQ / STOI of the versions scored at ``rate``, and their means (speech_codecs.py's figures)."""
    chosen = [v for v in versions if v.table_rate == rate]
    mode = pesq_mode(rate)
    lines = ["| piece | " + " | ".join(f"{v.name} PESQ-{mode} | STOI" for v in chosen) + " |",
             "|---|" + "---:|---:|" * len(chosen)]
    for i, piece in enumerate(pieces):
        cells = " | ".join(f"{v.scores['per_piece'][f'pesq_{mode}'][i]:.2f} | {v.scores['per_piece']['stoi'][i]:.3f}"
                           for v in chosen)
        lines.append(f"| {i + 1} | {cells} |")
    means = " | ".join(f"**{v.scores[f'pesq_{mode}']:.2f}** | **{v.scores['stoi']:.3f}**" for v in chosen)
    lines.append(f"| mean | {means} |")
    return lines


def mnist_images(n: int = 16, seed: int = 0) -> dict[str, torch.Tensor]:
    """Test digits (n, 1, 28, 28) in [0, 1], their mnist reconstructions, and mnist-prior samples of 0-9 (guided)."""
    images, _ = load_mnist(MNIST_ROOT, "test")
    x = torch.from_numpy(images[:n]).float().div(255)[:, None]
    tok = load_tokenizer("mnist").eval()
    with torch.no_grad():
        recon = tok.decode(tok.encode(x)).clamp(0, 1)
    priors, prior_tok, _ = load_prior_run("mnist-prior")
    labels = torch.arange(10).repeat_interleave(2)
    codes = sample_codes(priors, len(labels), labels, generator=torch.Generator().manual_seed(seed))
    samples = modality_of(prior_tok.config).decode_samples(prior_tok, codes)
    return {"originals": x, "reconstructions": recon, "samples": samples}


def write_page(out: Path, folder: Path, pieces: list[EvalPiece], versions: list[Version],
               digits: dict[str, torch.Tensor], n: int, max_seconds: float) -> None:
    media = out / "media"
    if media.exists():
        shutil.rmtree(media)
    media.mkdir(parents=True)
    for name, images in digits.items():
        save_png(image_grid(images, nrow=10 if name == "samples" else 8), media / f"mnist-{name}.png")
    shown = folder.relative_to(REPO.parent) if folder.is_relative_to(REPO.parent) else folder
    lines = ["# Listen", "",
             f"{len(pieces)} pieces of at most {max_seconds:g} s from `../{shown.as_posix()}` (speakers no model here "
             "has heard), each as it is and through every shipped speech model and the classical codecs. The wide-"
             "band versions are scored at 16 kHz (PESQ-wb), the narrow-band ones at 8 kHz (PESQ-nb); every score is "
             "computed after compensating the codec's delay. The players are Ogg Opus copies at about 32 kbit/s; the "
             "scores are those of each codec's own output. Written by `python bench/listening.py`.", ""]
    for i, piece in enumerate(pieces):
        lines += piece_section(i, piece, versions, media)
    lines += ["## Scores", "",
              f"`python bench/speech_codecs.py ../{shown.as_posix()} --rate 16000 --n {n} --max-seconds "
              f"{max_seconds:g} --tokenizer speech-16k speech-lm-16k --codebooks 2,4,8` prints these means (its Opus rows, "
              "its speech-16k row and the speech-lm-16k rows, x N: its first N codebooks of 8):", "",
              *score_table(pieces, versions, 16000), "",
              f"`python bench/speech_codecs.py ../{shown.as_posix()} --rate 8000 --n {n} --max-seconds "
              f"{max_seconds:g} --tokenizer speech-8k` prints these:", "",
              *score_table(pieces, versions, 8000), "",
              "## Digits", "",
              "MNIST test digits, the same digits through the `mnist` tokenizer (7x7 codes, 441 bits), and samples "
              "of `mnist-prior` asked for 0, 0, 1, 1, ..., 9, 9 (guidance 3):", "",
              '<p><img src="media/mnist-originals.png" alt="MNIST test digits"> '
              '<img src="media/mnist-reconstructions.png" alt="mnist reconstructions"> '
              '<img src="media/mnist-samples.png" alt="mnist-prior samples"></p>', ""]
    (out / "index.md").write_text("\n".join(lines))


def write_figure(path: Path, piece: EvalPiece, versions: list[Version], digits: dict[str, torch.Tensor]) -> None:
    """The README's overview: one piece's spectrograms (original and each version) over the three MNIST grids."""
    chosen = [v for v in versions if v.name in ("speech-16k", "speech-8k", "Opus 6", "Codec 2 3200")]
    chosen = [v for v in chosen if not (v.name == "Opus 6" and v.table_rate != 16000)]
    panels = [("original, 16 kHz", piece.audio)]
    for v in chosen:
        mode = pesq_mode(v.table_rate)
        panels.append((f"{v.name}: {v.kbps:g} kbit/s, PESQ-{mode} {v.scores['per_piece'][f'pesq_{mode}'][0]:.2f}",
                       v.outputs[0]))
    top_db = max(float(log_power(a).max()) for _, a in panels)
    fig = plt.figure(figsize=(13, 4.6))
    grid = fig.add_gridspec(2, len(panels), height_ratios=[1, 1.15])
    seconds = len(piece.audio) / PAGE_RATE
    for col, (title, audio) in enumerate(panels):
        ax = fig.add_subplot(grid[0, col])
        ax.imshow(spectrogram_rgb(audio, top_db), aspect="auto", extent=(0, seconds, 0, PAGE_RATE / 2000))
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("s", fontsize=8)
        ax.set_ylabel("kHz", fontsize=8) if col == 0 else ax.set_yticklabels([])
        ax.tick_params(labelsize=7)
    sub = grid[1, :].subgridspec(1, 3)
    for col, (name, title) in enumerate([("originals", "MNIST test digits"),
                                         ("reconstructions", "mnist: 441 bits an image"),
                                         ("samples", "mnist-prior, guided: 0-9")]):
        ax = fig.add_subplot(sub[0, col])
        ax.imshow(image_grid(digits[name], nrow=8 if name != "samples" else 10), cmap="gray")
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", nargs="?", type=Path, default=DEFAULT_FOLDER, help="folder of speech recordings")
    parser.add_argument("--n", type=int, default=10, help="pieces")
    parser.add_argument("--max-seconds", type=float, default=4.0, help="longest piece")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "listen", help="the page's folder")
    parser.add_argument("--figure", type=Path, default=None, help="also write the README's overview PNG here")
    parser.add_argument("--seed", type=int, default=0, help="the prior samples' seed")
    args = parser.parse_args()
    torch.set_num_threads(1)
    pieces, versions = run_codecs(args.folder.resolve(), args.n, args.max_seconds)
    digits = mnist_images(seed=args.seed)
    write_page(args.out, args.folder.resolve(), pieces, versions, digits, args.n, args.max_seconds)
    print(f"wrote {args.out / 'index.md'}", file=sys.stderr)
    if args.figure:
        write_figure(args.figure, pieces[0], versions, digits)
        print(f"wrote {args.figure}", file=sys.stderr)


if __name__ == "__main__":
    main()
