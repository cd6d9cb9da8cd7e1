"""What each kind of input is to vqtok: its files, how it is read, checked, encoded and written back, its default
shipped model, manifest fields, quality metrics, and its training loss, validation scores and examples; for a prior
over its codes, how a data set is encoded (with shifted copies), the rate its bits make, and how samples are decoded
and written. `Audio` and `Image`, one object each; a tokenizer's is `modality_of(tok.config)`.

A new kind of input is one `Modality` subclass and one `register` call: `vqtok encode` / `decode`, the manifest and
`vqtok eval` then take it (tests/test_modality.py adds multichannel 1-D arrays from a test file alone).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vqtok import metrics
from vqtok.data.audio import AUDIO_EXTENSIONS, resample, write_wav
from vqtok.data.images import IMAGE_EXTENSIONS, image_channels, load_image, shift_image
from vqtok.data.stream import AudioStream
from vqtok.errors import VqtokError
from vqtok.losses import MultiResolutionSTFTLoss, image_mse, waveform_l1
from vqtok.plots import image_grid, save_png, save_spectrograms
from vqtok import speech_level
from vqtok.tokenizer import streaming

logger = logging.getLogger(__name__)


class Codec(Protocol):
    """What a modality reads of the codec (codec.py) that holds it: the tokenizer and the run's settings."""

    tok: Any
    level_db: float | None  # the speech level audio is brought to (None: as it is)
    chunk_seconds: float | None  # how much of a long file is read at a time (None: all of it)
    batch_size: int

    def bar(self, **kwargs) -> Any:
        """A progress bar (tqdm's arguments), shown only when the run asked for progress."""


@dataclass
class Prepared:
    """An input ready to encode.

    `data`: what the modality hands the tokenizer (audio (T,) float32 at the tokenizer's rate and level, an image
    (C, H, W) in [0, 1]), or an `AudioStream` for a file long enough to be encoded block-wise (levelled as it is
    encoded). `source` is what the token file's sidecar records about the input (tokenizer/codes.py), `gain_db`
    included once known.
    """

    data: Any
    source: dict[str, Any]

    @property
    def streamed(self) -> bool:
        return isinstance(self.data, AudioStream)


@dataclass
class Decoded:
    """Codes decoded back: audio (T,) float32 at `sample_rate`, an image (C, H, W), or another modality's array."""

    data: np.ndarray
    sample_rate: int | None = None


class Modality:
    """One kind of input. Subclasses set the class attributes and the methods a kind needs."""

    name: str = ""  # the sidecar's and manifest's source "kind"
    extensions: tuple[str, ...] = ()  # input files, lower case
    decoded_suffix: str = ""  # what `vqtok decode` writes
    default_model: str | None = None  # the shipped tokenizer `vqtok encode` takes without -m
    best_metric: str = ""  # the validation metric a training run keeps its best checkpoint by (lower is better)
    axes: tuple[str, ...] = ()  # names of an input's spatial axes, after its channels (ONNX graphs name them)

    def matches(self, config) -> bool:
        """Whether a tokenizer of this config takes this kind of input."""
        raise NotImplementedError

    def open(self, codec: Codec, path: Path) -> Prepared:
        """A file read and checked for `codec.tok`; a one-line VqtokError naming the file on any problem."""
        raise NotImplementedError

    def prepare(self, codec: Codec, x: np.ndarray | torch.Tensor) -> Prepared:
        """An input already in memory, in the layout `read` gives."""
        raise NotImplementedError

    def read(self, tok, path: Path) -> np.ndarray:
        """A file whole, as `tok` takes it and as a reconstruction is scored against (`vqtok eval`)."""
        raise NotImplementedError

    def trace_size(self, tok) -> list[int]:
        """A spatial input size to trace a tokenizer's graphs with (integrations/onnx.py): odd, so padding is
        traced too."""
        raise VqtokError(f"no ONNX export for {self.name} tokenizers")

    def encode(self, codec: Codec, items: Sequence[Prepared]) -> list:
        """Codes per item, each exactly what it gives alone (default: `Tokenizer.encode_batch`)."""
        return codec.tok.encode_batch([torch.as_tensor(item.data) for item in items], batch_size=codec.batch_size)

    def decode(self, codec: Codec, codes, source: dict[str, Any], sample_rate: str, postfilter: bool) -> Decoded:
        """Codes (a tensor, or a list per level) back to the input `source` describes."""
        raise NotImplementedError

    def write(self, out: Path, decoded: Decoded, what: Path | str) -> None:
        raise NotImplementedError

    def manifest_fields(self, source: dict[str, Any], shapes: list[list[int]]) -> dict[str, Any]:
        """The manifest line's fields after path, codes and kind; `shapes` per level, top first."""
        return {"size": source.get("size"), "frames": shapes}

    def scores(self, y: np.ndarray, x: np.ndarray, tok) -> dict[str, float]:
        """Per-item quality of a reconstruction `y` of `x` (`vqtok eval`)."""
        return {"mse": metrics.mse(y, x)}

    def summary(self, tok, pairs: list[tuple[np.ndarray, np.ndarray]], bits: float, count: int,
                with_stoi: bool, with_pesq: bool) -> dict[str, Any]:
        """What `vqtok eval` adds over all (input, reconstruction) `pairs` to the means of `scores`, given the bits
        of their codes: more "metrics", "skipped" ones with the reason, and the rate (for audio, bit/s)."""
        return {}

    # ---------------------------------------------------------- cards (vqtok info, vqtok export)
    def card(self, tok) -> dict[str, Any]:
        """What a tokenizer's model card (`vqtok info`) adds for this kind of input: rates, sizes, context."""
        return {}

    def card_lines(self, card: dict[str, Any]) -> tuple[list[str], list[str]]:
        """The card's lines of this kind: those shown after the parameter count, and those after the levels."""
        return [], []

    def shipped_card(self, tok, data) -> dict[str, Any]:
        """A shipped tokenizer's card fields of this kind (pretrained/export.py), `data` its recipe's data section."""
        return {}

    # ---------------------------------------------------------- sampling (vqtok sample)
    def sample_files(self, out: Path | None, names: list[str]) -> list[Path]:
        """The files `vqtok sample` writes for samples `names`, given its -o (None: the default)."""
        raise VqtokError(f"vqtok sample writes no {self.name} samples")

    def decode_samples(self, tok, levels: list) -> Any:
        """Sampled codes per level (prior/generate.sample_codes) decoded: what `write_samples` takes."""
        raise VqtokError(f"vqtok sample decodes no {self.name} samples")

    def write_samples(self, files: list[Path], decoded, tok, titles: list[str], nrow: int | None) -> str:
        """Decoded samples (`decode_samples`) written to `files`; returns a line saying what was."""
        raise NotImplementedError

    def sample_source(self, tok, codes) -> dict[str, Any]:
        """The `source` record of a sampled item's token file (tokenizer/codes.write_codes): what decoding trims to.
        `codes`: a tensor, or a list per level (top first)."""
        raise VqtokError(f"vqtok sample writes no {self.name} token files")

    # ---------------------------------------------------------- priors (prior/data.py, prior/train.py)
    def prior_shifts(self, data, split: str, tok) -> list:
        """The offsets each item of a prior recipe's `data` is encoded at (`encode_for_prior`): the item as it is
        first, then for the training split, with data.shifts > 0, shifted copies (more data for the prior)."""
        if data.shifts and split == "train":
            raise VqtokError(f"data.shifts: no shifted copies of {self.name} inputs; set it to 0")
        return [None]

    def encode_for_prior(self, codec: Codec, dataset, items: range, shift) -> tuple[list[list[torch.Tensor]],
                                                                                   list[int]]:
        """Items `items` of a data set (data/build.py) encoded at offset `shift` (`prior_shifts`): per item its codes
        per level (top first, int32 on the CPU), and per item its size (what `prior_rates` divides by)."""
        raise VqtokError(f"a prior does not encode {self.name} data sets itself; encode them with vqtok encode and "
                         "train on the token files (data.kind codes)")

    def prior_rates(self, tok, bits: float, items: int, size: float) -> dict[str, float]:
        """What a prior's validation adds to its bits per code, given the `bits` of `items` items of total `size`
        (samples at the tokenizer's rate, or pixels): bits per image, or per second."""
        return {}

    def write_step_samples(self, folder: Path, step: int, tok, levels: list, labels: torch.Tensor | None,
                           nrow: int | None) -> None:
        """Samples a prior run draws at a validation (codes per level), decoded and written to `folder`, named by
        `step`; nothing for a kind of input without samples."""

    # ---------------------------------------------------------- training (tokenizer/train.py)
    def reconstruction_loss(self, config, weights) -> nn.Module:
        """The training loss of a tokenizer `config` with the recipe's loss `weights`: a module
        (recon, x, mask) -> {"rec": the weighted sum, and each term}."""
        return ImageLoss(weights)

    def batch_scores(self, model, x: torch.Tensor, recon: torch.Tensor, mask: torch.Tensor | None) -> dict:
        """Per-item validation scores of a batch x (B, C, *S) and its reconstruction, by name (lists)."""
        return {}

    def validation_metrics(self, means: dict[str, float]) -> dict[str, float]:
        """Metrics derived from the validation means of the loss terms."""
        return {}

    def write_examples(self, folder: Path, step: int, model, x: torch.Tensor, recon: torch.Tensor,
                       mask: torch.Tensor | None) -> None:
        """A few validation inputs beside their reconstructions, as files in `folder`."""


class Audio(Modality):
    """Waveforms: mono at the tokenizer's rate, brought to its speech level; block-wise when long."""

    name = "audio"
    extensions = AUDIO_EXTENSIONS
    decoded_suffix = ".wav"
    default_model = "speech-16k"
    best_metric = "mel_distance"
    axes = ("time",)

    def matches(self, config) -> bool:
        return config.dims == 1 and config.sample_rate is not None

    def open(self, codec: Codec, path: Path) -> Prepared:
        tok = codec.tok
        if path.suffix.lower() in IMAGE_EXTENSIONS:
            raise VqtokError(f"{path}: an image, but this is an audio tokenizer")
        stream = AudioStream(path, tok.sample_rate)
        info = stream.info
        if stream.length < tok.hop:
            raise VqtokError(
                f"{path}: {stream.length} samples at {tok.sample_rate} Hz "
                f"({1000 * stream.length / tok.sample_rate:.1f} ms) is shorter than one frame of this tokenizer "
                f"({tok.hop} samples, {1000 * tok.hop / tok.sample_rate:.1f} ms); nothing to encode")
        source = {"kind": "audio", "path": str(path), "length": stream.length, "sample_rate": tok.sample_rate,
                  "orig_sample_rate": info.orig_sample_rate, "channels": info.channels,
                  "orig_frames": info.orig_frames, "duration": info.duration_seconds}
        if stream.length > tok.block_frames * tok.hop:
            return Prepared(stream, source)
        return self._levelled(codec, stream.read(), source)

    def read(self, tok, path: Path) -> np.ndarray:
        return AudioStream(path, tok.sample_rate).read()  # (T,) mono at the tokenizer's rate, at its own level

    def trace_size(self, tok) -> list[int]:
        return [2 * tok.block_frames * tok.hop // 8 + 3]

    def prepare(self, codec: Codec, x: np.ndarray | torch.Tensor) -> Prepared:
        audio = codec.tok._mono(x).numpy()
        return self._levelled(codec, audio, {"kind": "audio", "path": None, "length": len(audio)})

    @staticmethod
    def _levelled(codec: Codec, audio: np.ndarray, source: dict[str, Any], clip_db: float | None = None) -> Prepared:
        """`audio` (T,) at the codec's level from the clip's level `clip_db` (None: measured on `audio`); the gain
        goes into `source`."""
        if codec.level_db is None:
            return Prepared(audio, source)
        audio, source["gain_db"] = speech_level.to_level(audio, codec.tok.sample_rate, codec.level_db, clip_db)
        return Prepared(audio, source)

    def encode(self, codec: Codec, items: Sequence[Prepared]) -> list:
        codes: list = [None] * len(items)
        for i, item in enumerate(items):
            if item.streamed:
                codes[i] = self._encode_stream(codec, item)
        short = [i for i, item in enumerate(items) if not item.streamed]
        if short:
            for i, c in zip(short, super().encode(codec, [items[i] for i in short])):
                codes[i] = c
        return codes

    def _encode_stream(self, codec: Codec, item: Prepared):
        """A long file block by block as it is read: the level measured over the whole file first."""
        tok, stream, source = codec.tok, item.data, item.source
        rate = stream.info.orig_sample_rate
        frames = stream.info.orig_frames if not codec.chunk_seconds else max(1, round(codec.chunk_seconds * rate))
        pieces = stream.pieces(frames)
        if codec.level_db is not None:
            meter = speech_level.LevelMeter(tok.sample_rate)
            for piece in stream.pieces(frames):
                meter.add(piece)
            clip_db = meter.level_db
            pieces = (self._levelled(codec, piece, source, clip_db).data for piece in pieces)
        parts = []
        total = stream.length / tok.sample_rate
        with codec.bar(total=round(total, 1), desc=stream.path.name, unit="s", leave=False,
                       disable=total < 30) as bar:
            for part in streaming.stream_encode(tok, pieces):
                parts.append(part)
                bar.update(round(len(part[-1]) * tok.downsample[-1] / tok.sample_rate, 1))
        levels = [torch.from_numpy(c) for c in streaming.join_levels(parts, tok.levels)]
        return levels[0] if tok.levels == 1 else levels

    def decode(self, codec: Codec, codes, source: dict[str, Any], sample_rate: str, postfilter: bool) -> Decoded:
        tok = codec.tok
        wav = tok.decode_long(codes, size=int(source["length"]), chunk_seconds=codec.chunk_seconds,
                              postfilter=postfilter)[0].cpu().numpy()  # (T,)
        wav = speech_level.undo_level(wav, source.get("gain_db", 0.0))
        rate = tok.sample_rate
        if sample_rate == "original":
            rate = int(source.get("orig_sample_rate", rate))
            if rate != tok.sample_rate:
                wav = resample(wav, tok.sample_rate, rate)
            n = int(source.get("orig_frames", len(wav)))
            wav = np.pad(wav, (0, max(0, n - len(wav))))[:n]
        elif sample_rate != "model":
            rate = int(sample_rate)
            if rate != tok.sample_rate:
                wav = resample(wav, tok.sample_rate, rate)
        return Decoded(wav, rate)

    def write(self, out: Path, decoded: Decoded, what: Path | str) -> None:
        wav = decoded.data
        peak = float(np.max(np.abs(wav))) if len(wav) else 0.0
        if peak > 1.0:
            logger.warning("%s: decoded audio peaks at %.2f; clipped to [-1, 1] for 16-bit WAV", what or out, peak)
        write_wav(out, wav, decoded.sample_rate)  # clipped to [-1, 1], 16-bit PCM

    def manifest_fields(self, source: dict[str, Any], shapes: list[list[int]]) -> dict[str, Any]:
        return {"duration": source.get("duration"), "length": source.get("length"),
                "frames": [shape[0] for shape in shapes]}

    def scores(self, y: np.ndarray, x: np.ndarray, tok) -> dict[str, float]:
        return {"si_snr": metrics.si_snr(y, x), "log_mel_distance": metrics.log_mel_distance(y, x, tok.sample_rate)}

    def summary(self, tok, pairs: list[tuple[np.ndarray, np.ndarray]], bits: float, count: int,
                with_stoi: bool, with_pesq: bool) -> dict[str, Any]:
        found: dict[str, Any] = {"metrics": {}, "skipped": {}}
        strings = speech_strings(pairs, tok.sample_rate)
        for name, fn, wanted in (("stoi", metrics.stoi, with_stoi), ("pesq_nb", metrics.pesq_nb, with_pesq)):
            if not wanted:
                continue
            values, errors = [], []
            for ref, est in strings:
                try:
                    values.append(fn(est, ref, tok.sample_rate))
                except VqtokError:
                    raise
                except Exception as err:  # noqa: BLE001 - pesq raises its own types on silent strings
                    errors.append(type(err).__name__)
            if values:
                found["metrics"][name] = float(np.mean(values))
            if errors:
                found["skipped"][name] = f"{len(errors)} of {len(strings)} strings ({errors[0]})"
        seconds = sum(len(x) for x, _ in pairs) / tok.sample_rate
        found["seconds"] = seconds
        found["bitrate"] = bits / seconds  # bit/s of the codes actually produced (padding included)
        found["nominal_bitrate"] = tok.bitrate
        return found

    def card(self, tok) -> dict[str, Any]:
        ctx = tok.context
        frame_rates = [tok.sample_rate / down for down in tok.downsample]
        card: dict[str, Any] = dict(
            sample_rate=tok.sample_rate, hop=tok.hop, level_db=tok.level_db, postfilter=tok.postfilter,
            tokens_per_second=sum(rate * cfg.codebooks for rate, cfg in zip(frame_rates, tok.level_configs)) or None,
            bitrate=tok.bitrate,
            receptive_field={"encode_samples": [ctx.encode_left, ctx.encode_right],
                             "decode_hops": [ctx.decode_left, ctx.decode_right]},
            block_frames=tok.block_frames,
            # live coding (stream.py): right context plus one hop, the decoder's plus the postfilter window
            latency_ms={"encode": 1000 * tok.stream_encoder().latency,
                        "decode": 1000 * tok.stream_decoder().latency,
                        "decode_no_postfilter": 1000 * tok.stream_decoder(postfilter=False).latency})
        if tok.codebooks > 1:  # bit/s of every prefix of the residual stages (--codebooks N)
            card["bitrate_by_codebooks"] = {n: tok.bitrate_at(n) for n in range(1, tok.codebooks + 1)}
        return card

    def card_lines(self, card: dict[str, Any]) -> tuple[list[str], list[str]]:
        head = [f"sample rate   {card['sample_rate']} Hz (hop {card['hop']} samples)"]
        if card.get("level_db") is not None:
            head.append(f"input level   {card['level_db']:g} dBFS: vqtok encode scales speech to it (gated RMS), "
                        "the token file keeps the gain for decode")
        if card.get("postfilter") is not None:
            head.append(f"postfilter    spectral sharpening, exponent {card['postfilter']:g}: decode ends with it "
                        "(--no-postfilter: not)")
        tail = [f"tokens/s      {card['tokens_per_second']:g}", f"bitrate       {card['bitrate']:.1f} bit/s"]
        if "bitrate_by_codebooks" in card:
            tail.append("by codebooks  " + ", ".join(f"{n}: {b / 1000:g} kbit/s"
                                                     for n, b in card["bitrate_by_codebooks"].items())
                        + " (vqtok encode --codebooks N)")
        rf = card["receptive_field"]
        tail.append(f"context       encoder {rf['encode_samples'][0]}+{rf['encode_samples'][1]} samples, "
                    f"decoder {rf['decode_hops'][0]}+{rf['decode_hops'][1]} hops; "
                    f"blocks of {card['block_frames']} hops")
        lat = card["latency_ms"]
        post = (f" ({lat['decode_no_postfilter']:.1f} ms without the postfilter)"
                if card.get("postfilter") is not None else "")
        tail.append(f"latency       streaming: encode {lat['encode']:.1f} ms, decode {lat['decode']:.1f} ms{post} "
                    "(right context + one hop)")
        return head, tail

    def shipped_card(self, tok, data) -> dict[str, Any]:
        card: dict[str, Any] = dict(sample_rate=tok.sample_rate, frame_rate=[round(r, 3) for r in tok.frame_rate],
                                    bitrate=round(tok.bitrate, 1))
        if tok.codebooks > 1:  # residual stages per frame; any prefix is a token file
            card.update(codebooks_per_frame=tok.codebooks,
                        bitrate_by_codebooks={n: round(tok.bitrate_at(n), 1) for n in range(1, tok.codebooks + 1)})
        return card

    def sample_files(self, out: Path | None, names: list[str]) -> list[Path]:
        out = Path("samples") if out is None else out
        if out.suffix:
            raise VqtokError(f"{out}: audio samples are written as WAV files into a folder; give -o DIR")
        return [out / f"{name}.wav" for name in names] + [out / "spectrograms.png"]

    def write_samples(self, files: list[Path], decoded, tok, titles: list[str], nrow: int | None) -> str:
        out = files[-1].parent
        out.mkdir(parents=True, exist_ok=True)
        for path, wave in zip(files, decoded):
            write_wav(path, wave, tok.sample_rate)
        seconds = sum(len(w) for w in decoded) / tok.sample_rate
        shown = min(len(decoded), 16)  # a picture of the first 16, to look at before listening
        save_spectrograms(list(decoded[:shown]), tok.sample_rate, titles[:shown], files[-1])
        return f"wrote {len(decoded)} WAV files ({seconds:.1f} s) and {files[-1].name} to {out}"

    def decode_samples(self, tok, levels: list) -> list[torch.Tensor]:
        """A list of n waveforms (T_i,) in [-1, 1]."""
        waves = []
        with torch.no_grad():
            for i in range(len(levels[0])):
                item = [lv[i] for lv in levels]
                waves.append(tok.decode(item[0] if tok.levels == 1 else item)[0].clamp(-1, 1).cpu())
        return waves

    def sample_source(self, tok, codes) -> dict[str, Any]:
        last = codes if not isinstance(codes, list) else codes[-1]
        length = int(last.shape[-1]) * tok.downsample[-1]  # (T,) or residual codebooks (Q, T)
        return {"kind": "audio", "path": None, "length": length, "sample_rate": tok.sample_rate,
                "duration": length / tok.sample_rate}

    def prior_shifts(self, data, split: str, tok) -> list[int]:
        """Samples of silence put before each clip: 0 first, then, for training, data.shifts delays spread evenly
        over one code's hop (k * hop // (shifts + 1)). A clip on a shifted frame grid gives another, equally valid
        code sequence of the same words: more data for the prior, as shifted images are for MNIST."""
        s = data.shifts if split == "train" else 0
        return sorted({k * tok.hop // (s + 1) for k in range(s + 1)})

    def encode_for_prior(self, codec: Codec, dataset, items: range, shift: int) -> tuple[list[list[torch.Tensor]],
                                                                                         list[int]]:
        # each clip at the tokenizer's speech level first, as `vqtok encode` brings a file (T,), then delayed
        clips = [F.pad(torch.from_numpy(self.prepare(codec, dataset.clip(i)).data), (shift, 0)) for i in items]
        codes = [[item] if codec.tok.levels == 1 else item for item in codec.tok.encode_batch(clips)]
        return [[c.cpu().to(torch.int32) for c in item] for item in codes], [len(c) for c in clips]

    def prior_rates(self, tok, bits: float, items: int, size: float) -> dict[str, float]:
        seconds = size / tok.sample_rate
        return {"bits_per_second": bits / seconds}

    def write_step_samples(self, folder: Path, step: int, tok, levels: list, labels: torch.Tensor | None,
                           nrow: int | None) -> None:
        """The first 8 samples as WAV files (label in the name) and their spectrograms."""
        waves = self.decode_samples(tok, levels)[:8]
        tags = ["" if labels is None else f"_label{int(labels[i])}" for i in range(len(waves))]
        titles = [f"sample {i}" + ("" if labels is None else f", label {int(labels[i])}") for i in range(len(waves))]
        files = [folder / f"step{step:07d}_{i}{tag}.wav" for i, tag in enumerate(tags)]
        self.write_samples(files + [folder / f"step{step:07d}.png"], waves, tok, titles, nrow)

    def reconstruction_loss(self, config, weights) -> nn.Module:
        return WaveformLoss(config.sample_rate, weights)

    def batch_scores(self, model, x: torch.Tensor, recon: torch.Tensor, mask: torch.Tensor | None) -> dict:
        scores: dict[str, list[float]] = {"si_snr": [], "mel_distance": []}
        for i in range(x.shape[0]):
            t = int(mask[i].sum()) if mask is not None else x.shape[-1]
            ref, est = x[i, 0, :t].cpu().numpy(), recon[i, 0, :t].float().cpu().numpy()
            scores["si_snr"].append(metrics.si_snr(est, ref))
            scores["mel_distance"].append(metrics.log_mel_distance(est, ref, model.sample_rate))
        return scores

    def write_examples(self, folder: Path, step: int, model, x: torch.Tensor, recon: torch.Tensor,
                       mask: torch.Tensor | None) -> None:
        clips, titles = [], []
        for i in range(min(4, x.shape[0])):
            t = int(mask[i].sum()) if mask is not None else x.shape[-1]
            pair = torch.cat([x[i, 0, :t], torch.zeros(model.sample_rate // 4), recon[i, 0, :t]])
            write_wav(folder / f"step{step:07d}_{i}.wav", pair, model.sample_rate)
            clips += [x[i, 0, :t], recon[i, 0, :t]]
            titles += [f"clip {i}: input", f"clip {i}: reconstruction"]
        # Each input beside its reconstruction (two pairs per row).
        save_spectrograms(clips, model.sample_rate, titles, folder / f"step{step:07d}.png")


# STOI and PESQ need a few seconds of speech: `vqtok eval` scores consecutive clips joined with GAP_SECONDS of
# silence into strings of at least STRING_SECONDS (the idea of bench/speech_protocol.py's digit strings).
STRING_SECONDS = 3.0
GAP_SECONDS = 0.1


def speech_strings(pairs: list[tuple[np.ndarray, np.ndarray]], rate: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Join consecutive (reference, estimate) clips with silence into pairs of strings >= STRING_SECONDS."""
    gap = np.zeros(int(GAP_SECONDS * rate), np.float32)
    out, refs, ests, length = [], [], [], 0
    for ref, est in pairs:
        refs += [ref, gap]
        ests += [est, gap]
        length += len(ref) + len(gap)
        if length >= STRING_SECONDS * rate:
            out.append((np.concatenate(refs), np.concatenate(ests)))
            refs, ests, length = [], [], 0
    if refs:
        if out:  # a short remainder joins the last string rather than be scored alone
            r, e = out.pop()
            refs, ests = [r] + refs, [e] + ests
        out.append((np.concatenate(refs), np.concatenate(ests)))
    return out


# Image channel counts by name, as `image_channels` reads them from a file's header.
_CHANNEL_NAMES = {1: "grey", 3: "RGB"}


class Image(Modality):
    """Pictures at their own size, with the tokenizer's channel count."""

    name = "image"
    extensions = IMAGE_EXTENSIONS
    decoded_suffix = ".png"
    default_model = "mnist"
    best_metric = "mse"
    axes = ("height", "width")

    def matches(self, config) -> bool:
        return config.dims == 2

    def trace_size(self, tok) -> list[int]:
        return [4 * tok.hop + 3, 5 * tok.hop + 1]

    def open(self, codec: Codec, path: Path) -> Prepared:
        tok = codec.tok
        if path.suffix.lower() in AUDIO_EXTENSIONS:
            raise VqtokError(f"{path}: an audio file, but this is an image tokenizer")
        channels = tok.config.in_channels
        stored = image_channels(path)
        if stored != channels:
            # An RGB photo given to a grey tokenizer (or the reverse) encodes, but decodes as what the tokenizer
            # makes: say so rather than hand back a different picture without a word.
            logger.warning("%s: %s pixels, converted to %s for this %d-channel tokenizer; it decodes as %s", path,
                           _CHANNEL_NAMES[stored], _CHANNEL_NAMES[channels], channels, _CHANNEL_NAMES[channels])
        image = self.read(tok, path)
        h, w = image.shape[1:]
        if min(h, w) < tok.hop:
            raise VqtokError(f"{path}: {h}x{w} pixels is smaller than one code of this tokenizer ({tok.hop}x{tok.hop})")
        return Prepared(image, {"kind": "image", "path": str(path), "size": [int(h), int(w)],
                                "channels": int(image.shape[0])})

    def read(self, tok, path: Path) -> np.ndarray:
        return load_image(path, None, channels=tok.config.in_channels)  # (C, H, W) in [0, 1]

    def prepare(self, codec: Codec, x: np.ndarray | torch.Tensor) -> Prepared:
        image = np.ascontiguousarray(x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else x)
        return Prepared(image, {"kind": "image", "path": None, "size": list(image.shape[1:])})

    def decode(self, codec: Codec, codes, source: dict[str, Any], sample_rate: str, postfilter: bool) -> Decoded:
        return Decoded(codec.tok.decode(codes, size=tuple(source["size"])).cpu().numpy())  # (C, H, W)

    def write(self, out: Path, decoded: Decoded, what: Path | str) -> None:
        pixels = np.round(np.clip(decoded.data, 0.0, 1.0) * 255).astype(np.uint8).transpose(1, 2, 0)  # (H, W, C)
        save_png(pixels, out)

    def scores(self, y: np.ndarray, x: np.ndarray, tok) -> dict[str, float]:
        return {"mse": metrics.mse(y, x), "psnr": metrics.psnr(np.clip(y, 0, 1), x)}

    def summary(self, tok, pairs: list[tuple[np.ndarray, np.ndarray]], bits: float, count: int,
                with_stoi: bool, with_pesq: bool) -> dict[str, Any]:
        return {"bits_per_image": bits / count}

    def card(self, tok) -> dict[str, Any]:
        return {"tokens_per_32x32_image": sum(math.prod(s) for s in tok.code_shape((32, 32)))}

    def card_lines(self, card: dict[str, Any]) -> tuple[list[str], list[str]]:
        return [], [f"tokens        {card['tokens_per_32x32_image']} per 32x32 image"]

    def shipped_card(self, tok, data) -> dict[str, Any]:
        side = data.pad_to or 28
        size = list(data.image_size) if data.kind == "images" and data.image_size else [side, side]
        shapes = tok.code_shape(tuple(size))
        return dict(image_size=size, code_shape=[list(s) for s in shapes],
                    bits_per_image=round(sum(math.prod(s) * math.log2(k) for s, k in zip(shapes, tok.codebook_size)),
                                         1))

    def sample_files(self, out: Path | None, names: list[str]) -> list[Path]:
        out = Path("samples.png") if out is None else out
        return [out if out.suffix.lower() == ".png" else out / "samples.png"]

    def write_samples(self, files: list[Path], decoded, tok, titles: list[str], nrow: int | None) -> str:
        grid = files[0]
        grid.parent.mkdir(parents=True, exist_ok=True)
        save_png(image_grid(decoded, nrow=nrow or 8), grid)
        return f"wrote {grid} ({len(decoded)} samples)"

    def decode_samples(self, tok, levels: list) -> torch.Tensor:
        """Images (n, C, H, W) in [0, 1]."""
        with torch.no_grad():
            return tok.decode(levels[0] if tok.levels == 1 else levels).clamp(0, 1).cpu()

    def sample_source(self, tok, codes) -> dict[str, Any]:
        last = codes if not isinstance(codes, list) else codes[-1]
        size = [int(s) * tok.downsample[-1] for s in last.shape]
        return {"kind": "image", "path": None, "size": size, "channels": tok.config.in_channels}

    def prior_shifts(self, data, split: str, tok) -> list[tuple[int, int]]:
        """(dy, dx) offsets each image is encoded at: (0, 0) first, then, for training, every other offset of at
        most data.shifts pixels on each axis (a digit moved by a pixel is still a digit)."""
        s = data.shifts if split == "train" else 0
        return [(0, 0)] + [(dy, dx) for dy in range(-s, s + 1) for dx in range(-s, s + 1) if (dy, dx) != (0, 0)]

    def encode_for_prior(self, codec: Codec, dataset, items: range, shift: tuple[int, int]) -> tuple[
            list[list[torch.Tensor]], list[int]]:
        tok = codec.tok
        x = torch.stack([dataset[i]["x"] for i in items])  # (B, C, H, W)
        codes = tok.encode(shift_image(x, *shift).to(tok.device))
        codes = [codes] if tok.levels == 1 else codes  # per level (B, h, w)
        per_item = [list(item) for item in zip(*(list(c.cpu().to(torch.int32)) for c in codes))]
        return per_item, [x.shape[-2] * x.shape[-1]] * len(items)

    def prior_rates(self, tok, bits: float, items: int, size: float) -> dict[str, float]:
        return {"bits_per_image": bits / items}

    def write_step_samples(self, folder: Path, step: int, tok, levels: list, labels: torch.Tensor | None,
                           nrow: int | None) -> None:
        """One PNG grid (a row per class of a class-conditional prior)."""
        self.write_samples([folder / f"step{step:07d}.png"], self.decode_samples(tok, levels), tok, [], nrow)

    def validation_metrics(self, means: dict[str, float]) -> dict[str, float]:
        return {"psnr": 10 * math.log10(1.0 / max(means["mse"], 1e-12))}

    def write_examples(self, folder: Path, step: int, model, x: torch.Tensor, recon: torch.Tensor,
                       mask: torch.Tensor | None) -> None:
        # Row pairs: originals above their reconstructions.
        save_png(image_grid(torch.cat([x, recon]), nrow=x.shape[0]), folder / f"step{step:07d}.png")


class ImageLoss(nn.Module):
    """MSE on [0, 1] pixels."""

    def __init__(self, weights):
        super().__init__()
        self.weights = weights

    def forward(self, recon: torch.Tensor, x: torch.Tensor, mask: torch.Tensor | None) -> dict[str, torch.Tensor]:
        mse = image_mse(recon.float(), x)
        return {"rec": self.weights.mse * mse, "mse": mse}


class WaveformLoss(nn.Module):
    """L1 on the waveform + multi-resolution STFT/log-mel loss, over the real samples of `mask`."""

    def __init__(self, sample_rate: int, weights):
        super().__init__()
        self.weights = weights
        self.stft = MultiResolutionSTFTLoss(sample_rate, fft_sizes=tuple(weights.fft_sizes))

    def forward(self, recon: torch.Tensor, x: torch.Tensor, mask: torch.Tensor | None) -> dict[str, torch.Tensor]:
        recon = recon.float()
        l1 = waveform_l1(recon, x, mask)
        stft = self.stft(recon, x, mask)
        return {"rec": self.weights.l1 * l1 + self.weights.stft * stft, "l1": l1, "stft": stft}


# Later registrations are asked first, so a registered kind can claim configs a built-in one would take.
MODALITIES: list[Modality] = [Audio(), Image()]


def register(modality: Modality) -> Modality:
    """Add a kind of input (see the module doc); returns it."""
    MODALITIES.insert(0, modality)
    return modality


def modality_of(config) -> Modality:
    """The modality of a tokenizer config (`tok.config`)."""
    for modality in MODALITIES:
        if modality.matches(config):
            return modality
    if config.dims == 1:
        raise VqtokError("an audio tokenizer (dims 1) needs a sample_rate")
    raise VqtokError(f"no input modality takes a tokenizer with dims {config.dims}; "
                     f"the known ones are {', '.join(m.name for m in MODALITIES)}")


def by_name(name: str) -> Modality:
    """The modality whose source kind is `name` (a sidecar's or manifest's "kind")."""
    for modality in MODALITIES:
        if modality.name == name:
            return modality
    raise VqtokError(f"unknown input kind '{name}'; the known ones are {', '.join(m.name for m in MODALITIES)}")


def by_extension(path: Path) -> Modality | None:
    """The modality whose files end like `path`, or None."""
    suffix = path.suffix.lower()
    return next((m for m in MODALITIES if suffix in m.extensions), None)
