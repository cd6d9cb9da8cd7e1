"""Print one markdown table of speech codec quality: classical codecs and vqtok tokenizers on the same audio.

    python bench/speech_codecs.py [FOLDER] [--rate 16000|8000] [--n N] [--tokenizer RUN_OR_FILE ...]
    python bench/speech_codecs.py --digits [--speakers nicolas] [--n 50] [--tokenizer ...]

FOLDER (default ../shared/data/speech/test): every audio file under it, at --rate (default 16 kHz), cut
into equal pieces of at most 8 s. --digits: the FSDD digit strings of speech_protocol.make_eval_strings
at 8 kHz (--speakers keeps the strings of the speakers named; the fsdd tokenizer never hears nicolas).
Classical rows at 16 kHz: Opus 6/8/12/16 kbit/s wide band; at 8 kHz: GSM 06.10, Opus 6, Codec 2
3200/1600/700C; all through Debian's command-line tools (apt-get install opus-tools codec2 sox), and a
missing tool gives a row saying so. A tokenizer at another sample rate than the table's runs at its own:
the audio is resampled in and its output back (soxr HQ). Every metric is computed after compensating the
codec's delay; tokenizer rows add codebook usage and normalised entropy per codebook over all pieces.
A tokenizer with a level_db encodes each piece brought to that level, as `vqtok encode` does (--as-is adds
its rows without); one with a postfilter decodes through it, as `vqtok decode` does (--no-postfilter adds its
rows without).
"""

from __future__ import annotations

import argparse
import math
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from speech_protocol import (  # noqa: E402
    MAX_PIECE_SECONDS,
    EvalPiece,
    defined_pesq_modes,
    evaluate_codec,
    make_eval_strings,
    make_folder_pieces,
)

import vqtok.codec  # noqa: E402
from vqtok import metrics  # noqa: E402
from vqtok.data.audio import resample  # noqa: E402
from vqtok.errors import VqtokError  # noqa: E402
from vqtok.tokenizer.checkpoint import load_tokenizer, tokenizer_file  # noqa: E402

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
DEFAULT_FOLDER = SHARED / "speech" / "test"
DEFAULT_FSDD = SHARED / "fsdd" / "recordings"


@dataclass
class Codec:
    """A named round trip ``fn(audio (T,)) -> audio (T',)`` at the table's rate, with the tools it needs.

    ``codes`` collects what a tokenizer emitted (one list of per-codebook arrays per call) for the
    usage columns; ``codebook_sizes`` names the size of each of those codebooks.
    """

    name: str
    rate: int  # the rate the codec itself runs at
    bitrate: float  # bit/s
    fn: Callable[[np.ndarray], np.ndarray]
    tools: tuple[str, ...] = ()
    codebook_sizes: tuple[int, ...] = ()
    codes: list[list[np.ndarray]] = field(default_factory=list)


def run(*cmd: str | Path) -> None:
    """Run a codec tool quietly; a non-zero exit raises CalledProcessError."""
    subprocess.run([str(c) for c in cmd], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def to_pcm16(audio: np.ndarray) -> np.ndarray:
    """float [-1, 1) -> little-endian int16, the raw format c2enc reads."""
    return np.round(np.clip(audio, -1.0, 32767 / 32768) * 32768).astype("<i2")


def opus(kbps: float, rate: int) -> Callable[[np.ndarray], np.ndarray]:
    # Hard CBR: a VQ tokenizer spends the same bits on silence as on speech, and so does CBR. Opus's
    # default VBR spends less than the nominal rate on average but moves the bits into the speech,
    # scoring about +2.3 dB SI-SNR, +0.02 STOI and +0.25 PESQ over CBR on the digit protocol.
    def fn(audio: np.ndarray) -> np.ndarray:
        with tempfile.TemporaryDirectory() as tmp:
            d = Path(tmp)
            sf.write(d / "in.wav", audio, rate, subtype="PCM_16")
            run("opusenc", "--quiet", "--bitrate", str(kbps), "--hard-cbr", d / "in.wav", d / "x.opus")
            run("opusdec", "--quiet", "--rate", str(rate), d / "x.opus", d / "out.wav")
            out, out_rate = sf.read(d / "out.wav", dtype="float32")
            if out_rate != rate:
                raise RuntimeError(f"opusdec wrote {out_rate} Hz despite --rate {rate}")
            return out
    return fn


def codec2(mode: str) -> Callable[[np.ndarray], np.ndarray]:
    def fn(audio: np.ndarray) -> np.ndarray:
        with tempfile.TemporaryDirectory() as tmp:
            d = Path(tmp)
            (d / "in.raw").write_bytes(to_pcm16(audio).tobytes())  # raw 16-bit LE, 8 kHz mono
            run("c2enc", mode, d / "in.raw", d / "x.c2")
            run("c2dec", mode, d / "x.c2", d / "out.raw")
            return np.frombuffer((d / "out.raw").read_bytes(), dtype="<i2").astype(np.float32) / 32768
    return fn


def gsm(audio: np.ndarray) -> np.ndarray:
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        sf.write(d / "in.wav", audio, 8000, subtype="PCM_16")
        run("sox", d / "in.wav", "-t", "gsm", d / "x.gsm")
        run("sox", "-t", "gsm", "-r", "8000", "-c", "1", d / "x.gsm", "-b", "16", d / "out.wav")
        out, _ = sf.read(d / "out.wav", dtype="float32")
        return out


OPUS = ("opusenc", "opusdec")
CODEC2 = ("c2enc", "c2dec")
CLASSICAL: dict[int, list[Codec]] = {
    16000: [Codec(f"Opus {k} (hard CBR)", 16000, k * 1000, opus(k, 16000), OPUS) for k in (16, 12, 8, 6)],
    8000: [
        Codec("GSM 06.10", 8000, 13000, gsm, ("sox",)),
        Codec("Opus 6 (hard CBR)", 8000, 6000, opus(6, 8000), OPUS),
        Codec("Codec 2 3200", 8000, 3200, codec2("3200"), CODEC2),
        Codec("Codec 2 1600", 8000, 1600, codec2("1600"), CODEC2),
        Codec("Codec 2 700C", 8000, 700, codec2("700C"), CODEC2),
    ],
}


def tokenizer_codecs(path: str, table_rate: int, as_is: bool = False, raw: bool = False,
                     codebooks: list[int] | None = None) -> list[Codec]:
    """One round trip per bitrate of the tokenizer at ``path`` (a run folder or tokenizer file).

    A tokenizer with a ``level_db`` gets each piece brought to that level and its output brought back, as
    `vqtok encode` / `decode` do (vqtok/speech_level.py); ``as_is`` adds rows that give it the pieces
    as they are. One with a ``postfilter`` decodes through it (postfilter.py); ``raw`` adds rows without it.

    A tokenizer with several codebooks (residual stages) gives one row per prefix in ``codebooks`` (default:
    every prefix 1..Q): the clip is encoded once and each prefix of its codes decoded.
    """
    tok = load_tokenizer(tokenizer_file(path))
    if tok.sample_rate is None:
        raise VqtokError(f"{path}: an image tokenizer; pass a speech tokenizer")
    rate = int(tok.sample_rate)
    label = Path(path).name if Path(path).is_dir() else Path(path).parent.name or Path(path).stem

    stages = tok.codebooks  # residual stages per frame (arch "stacked"); 1 for a plain VQ
    prefixes = [None] if stages == 1 else sorted(set(codebooks or range(1, stages + 1)))
    if any(n is not None and not 1 <= n <= stages for n in prefixes):
        raise VqtokError(f"{path}: --codebooks {codebooks}: this tokenizer has {stages} codebooks")

    def codec(at_level: bool, postfilter: bool, n: int | None) -> Codec:
        seen: list[list[np.ndarray]] = []  # per call: codes per codebook
        contract = vqtok.codec.Codec(tok, at_level=at_level)  # level, encode, decode, undo the gain as vqtok does

        def fn(audio: np.ndarray) -> np.ndarray:  # (T,) at table_rate -> (T',) at table_rate
            x = audio if rate == table_rate else resample(audio, table_rate, rate)
            item = contract.prepare(x)
            codes = contract.encode([item])[0]
            levels = codes if isinstance(codes, list) else [codes if n is None else codes[:n]]
            y = contract.decode(levels, item.source, postfilter=postfilter).data
            # one (1, frames) array per codebook: a level's codes, or each residual stage's
            rows = levels if n is None else list(levels[0])
            seen.append([r.cpu().numpy()[None] for r in rows])
            return y if rate == table_rate else resample(y, rate, table_rate)

        notes = [*([f"{n} of {stages} codebooks"] if n is not None else []),
                 *(["as is"] if tok.level_db is not None and not at_level else []),
                 *(["no postfilter"] if tok.postfilter is not None and not postfilter else [])]
        name = f"vqtok {label}" + (f" ({', '.join(notes)})" if notes else "")
        bitrate = float(tok.bitrate) if n is None else tok.bitrate_at(n)
        sizes = tok.codebook_size if n is None else tok.codebook_size * n
        return Codec(name, rate, bitrate, fn, codebook_sizes=sizes, codes=seen)

    has_level, has_post = tok.level_db is not None, tok.postfilter is not None
    rows = []
    for n in prefixes:
        rows += [codec(has_level, has_post, n),
                 *([codec(False, has_post, n)] if as_is and has_level else []),
                 *([codec(has_level, False, n)] if raw and has_post else [])]
    return rows


def usage_cells(codec: Codec) -> tuple[str, str]:
    """Codebook usage (% of codes seen) and entropy / log2(K) per codebook, "/"-joined; "-" for classical."""
    if not codec.codebook_sizes:
        return "-", "-"
    usage, entropy = [], []
    for i, size in enumerate(codec.codebook_sizes):
        stats = metrics.codebook_stats(np.concatenate([c[i].ravel() for c in codec.codes]), size)
        usage.append(f"{100 * stats['usage']:.1f}")
        entropy.append(f"{abs(stats['entropy_bits']) / math.log2(size):.3f}")  # abs: -0.0 for one code
    return " / ".join(usage), " / ".join(entropy)


def header(modes: tuple[str, ...]) -> list[str]:
    cols = ["codec", "runs at", "kbit/s"] + [f"PESQ-{m}" for m in modes] + [
        "STOI", "SI-SNR dB", "log-mel dist", "codebook use %", "norm. entropy", "time s"]
    return [f"| {' | '.join(cols)} |", "|" + "|".join("---" if i < 2 else "---:" for i in range(len(cols))) + "|"]


def row(codec: Codec, pieces: list[EvalPiece], rate: int, modes: tuple[str, ...]) -> str:
    head = f"| {codec.name} | {codec.rate / 1000:g} kHz | {codec.bitrate / 1000:.2f} |"
    blanks = " |" * (len(modes) + 6)
    missing = [t for t in codec.tools if shutil.which(t) is None]
    if missing:
        return f"{head} not run: {', '.join(missing)} not installed{blanks}"
    start = time.perf_counter()
    try:
        r = evaluate_codec(codec.fn, pieces, rate, pesq=modes)
    except subprocess.CalledProcessError as err:
        return f"{head} failed: {' '.join(map(str, err.cmd[:2]))} exited {err.returncode}{blanks}"
    use, entropy = usage_cells(codec)
    pesq = "".join(f" {r[f'pesq_{m}']:.2f} |" for m in modes)
    return (f"{head}{pesq} {r['stoi']:.3f} | {r['si_snr']:.1f} | {r['log_mel_distance']:.3f} | {use} | {entropy} | "
            f"{time.perf_counter() - start:.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", nargs="?", type=Path, default=DEFAULT_FOLDER, help="folder of speech recordings")
    parser.add_argument("--rate", type=int, choices=(8000, 16000), default=None,
                        help="the table's sample rate (default 16000; 8000 with --digits)")
    parser.add_argument("--digits", action="store_true", help="FSDD digit strings instead of a folder")
    parser.add_argument("--fsdd", type=Path, default=DEFAULT_FSDD, help="FSDD recordings folder for --digits")
    parser.add_argument("--speakers", default=None, help="--digits: comma-separated FSDD speakers (e.g. nicolas)")
    parser.add_argument("--n", type=int, default=None,
                        help="pieces (default: all of the folder) or digit strings (default 50)")
    parser.add_argument("--max-seconds", type=float, default=MAX_PIECE_SECONDS, help="longest piece of a folder")
    parser.add_argument("--tokenizer", action="extend", nargs="+", default=[], metavar="RUN_OR_FILE",
                        help="vqtok tokenizer run folders or files (repeatable)")
    parser.add_argument("--codebooks", type=lambda v: [int(n) for n in v.split(",")], default=None,
                        help="multi-codebook tokenizers: the prefixes to score, e.g. 2,4,8 (default: 1..Q)")
    parser.add_argument("--no-classical", action="store_true", help="only the tokenizers")
    parser.add_argument("--as-is", action="store_true",
                        help="also a row for each tokenizer with a level_db, given the pieces at their own level")
    parser.add_argument("--no-postfilter", action="store_true",
                        help="also a row for each tokenizer with a postfilter, decoded without it")
    parser.add_argument("--no-pesq", action="store_true", help="skip PESQ (the slowest metric)")
    args = parser.parse_args()
    if args.speakers and not args.digits:
        parser.error("--speakers applies to --digits")
    rate = args.rate or (8000 if args.digits else 16000)
    modes = () if args.no_pesq else defined_pesq_modes(rate)

    try:
        codecs = [] if args.no_classical else list(CLASSICAL[rate])
        for path in args.tokenizer:
            codecs += tokenizer_codecs(path, rate, as_is=args.as_is, raw=args.no_postfilter, codebooks=args.codebooks)
        if args.digits:
            speakers = args.speakers.split(",") if args.speakers else None
            pieces = make_eval_strings(args.fsdd, n=args.n or 50, sample_rate=rate, speakers=speakers)
            who = ", ".join(sorted({p.speaker for p in pieces}))
            source = f"{len(pieces)} strings of 5 FSDD test digits (speakers {who})"
        else:
            pieces = make_folder_pieces(args.folder, rate, args.max_seconds, args.n)
            files = len({p.files[0] for p in pieces})
            source = (f"{len(pieces)} pieces of at most {args.max_seconds:g} s from {files} files of "
                      f"{args.folder.resolve()}")
    except VqtokError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    seconds = sum(len(p.audio) for p in pieces) / rate
    print(f"{source}: {seconds / 60:.1f} min at {rate} Hz; every metric after compensating the codec delay "
          "(cross-correlation, +-0.2 s)\n")
    print("\n".join(header(modes)))
    for codec in codecs:
        print(row(codec, pieces, rate, modes), flush=True)


if __name__ == "__main__":
    main()
