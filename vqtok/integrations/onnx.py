"""ONNX export of a tokenizer: encoder (input -> codes, code search included), decoder (codes -> output) and the
audio postfilter as graphs for onnxruntime, the tokenizer's config and fingerprints in their metadata.

Graphs (opset `OPSET`, torch.onnx's dynamo exporter; batch and every spatial axis dynamic):

* ``encoder.onnx``: ``input`` (B, C, *S) float32 -> one int64 output per level, top first (``codes``, or ``top``
  and ``bottom``), (B, *S'). The input is zero-padded to whole hops inside the graph, as `Tokenizer.encode` pads.
* ``decoder.onnx``: the codes -> ``output`` (B, C, *S), the decoder's output without the postfilter.
* ``postfilter.onnx`` (audio tokenizers with a postfilter): ``audio`` (B, T) -> ``audio`` (B, T), the spectral
  sharpening of postfilter.py over whole clips.

Code search. torch's `nearest_codes` takes the fp32 distance argmin and decides again in fp64 the rows whose
runner-up is within fp32's error bound. A graph has no such data-dependent second pass: it keeps the fp32
argmin (ties to the lowest index, like torch's), so it can pick the other code of a near-tie. docs/onnx.md gives
the share of identical codes measured on speech and digits.

STFTs. ONNX's DFT operator is missing from some runtimes (onnxruntime-web among them) and takes complex values as
an extra axis; the postfilter and the istft head compute theirs here as matrix products with fixed cosine and sine
tables, which every runtime has, at a float error measured in docs/onnx.md.

Metadata (``metadata_props`` of every graph, strings): ``vqtok.tokenizer`` (what a token file's sidecar records:
fingerprints, rates, codebook sizes, hop, block frames, name and path), ``vqtok.config`` (the TokenizerConfig),
``vqtok.context`` (receptive fields, for block-wise coding), ``vqtok.graph``, ``vqtok.version``, ``vqtok.opset``,
``vqtok.search``. ``tokenizer.json`` beside the graphs holds the same in one file.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import math
import types
import warnings
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vqtok.config import to_dict
from vqtok.errors import VqtokError
from vqtok.files import atomic_write
from vqtok.modality import modality_of
from vqtok.tokenizer import nets
from vqtok.tokenizer.codes import tokenizer_location, tokenizer_summary
from vqtok.tokenizer.heads import IstftDecoder
from vqtok.tokenizer.postfilter import OVERLAP, window_size
from vqtok.tokenizer.quantizer import VectorQuantizer
from vqtok.tokenizer.rvq import ResidualVQ
from vqtok.version import __version__

OPSET = 18
SEARCH = "fp32 distance argmin, ties to the lowest index; no fp64 re-decision of near-ties (torch has one)"
GRAPHS = ("encoder", "decoder", "postfilter")

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------ exportable copies of the layers
def exportable_copy(tok) -> nn.Module:
    """A deep copy of `tok` whose layers trace into plain ONNX operators: the CPU-tuned convolutions back to
    torch's own, the quantizers' search to the fp32 argmin, the istft head's FFTs to matrix products."""
    model = copy.deepcopy(tok).cpu().float().eval()
    for module in model.modules():
        if isinstance(module, nets.Conv1d):  # the channels-last 2-D path is a CPU speed trick, not a graph
            module.__class__ = nn.Conv1d
        elif isinstance(module, nets.ConvTranspose1d):
            module.__class__ = nn.ConvTranspose1d
        elif isinstance(module, VectorQuantizer):
            module.encode = types.MethodType(_argmin_encode, module)
        elif isinstance(module, IstftDecoder):
            module.spectrum_to_wave = types.MethodType(_spectrum_to_wave, module)
        elif isinstance(module, ResidualVQ):
            module.decode = types.MethodType(_prefix_decode, module)
    return model


def _argmin_encode(self: VectorQuantizer, x: Tensor, fragile_rtol=None) -> Tensor:
    """VectorQuantizer.encode as a graph: (B, D, *S) -> (B, *S), argmin ||x - c||^2 - ||c||^2 + ... in fp32 on
    vectors centred on the codebook mean, as nearest_codes' first pass."""
    codebook = self.codebook
    center = codebook.mean(0)  # (D,)
    e = codebook - center  # (K, D)
    flat = x.movedim(1, -1) - center  # (B, *S, D)
    dist = flat @ (e.t() * -2.0) + (e * e).sum(1)  # (B, *S, K): ||e||^2 - 2 x.e
    return dist.argmin(-1)


def _prefix_decode(self: ResidualVQ, codes: Tensor, prefixes=None) -> Tensor:
    """ResidualVQ.decode as a graph for any prefix n <= Q of the stages, n a dynamic axis: (B, n, *S) codes padded
    to Q stages, the stages past n multiplied by 0 (a loop over n itself would be unrolled at the traced size)."""
    n, q = codes.shape[1], self.codebooks
    full = F.pad(codes, [0, 0] * (codes.dim() - 2) + [0, q - n])  # (B, Q, *S)
    keep = (torch.arange(q, device=codes.device) < n).float()  # (Q,)
    out = None
    for i, stage in enumerate(self.stages):
        v = stage.decode(full[:, i]) * keep[i]
        out = v if out is None else out + v
    return out


def dft_tables(n: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Real DFT of length n as matrices: x (.., n) @ cos -> Re X, @ sin -> Im X (n // 2 + 1 bins); and the
    inverse, Re X @ icos + Im X @ isin -> x (the imaginary parts of DC and Nyquist ignored, as irfft does)."""
    t = torch.arange(n, dtype=torch.float64)
    k = torch.arange(n // 2 + 1, dtype=torch.float64)
    angle = 2 * math.pi * torch.outer(t, k) / n  # (n, bins); integer products keep it exact before the scaling
    cos, sin = torch.cos(angle), -torch.sin(angle)
    weight = torch.full((n // 2 + 1,), 2.0, dtype=torch.float64)
    weight[0] = 1.0
    if n % 2 == 0:
        weight[-1] = 1.0
    icos = (torch.cos(angle) * weight / n).t()  # (bins, n)
    isin = (-torch.sin(angle) * weight / n).t()
    return tuple(m.float().contiguous() for m in (cos, sin, icos, isin))


def _spectrum_to_wave(self: IstftDecoder, log_mag: Tensor, phase: Tensor) -> Tensor:
    """IstftDecoder.spectrum_to_wave with the inverse FFT as matrix products and overlap-add as shifted sums."""
    istft = self.istft
    _, _, icos, isin = dft_tables(istft.n_fft)
    mag = torch.exp(log_mag.clamp(max=6.0))
    b, n = log_mag.shape[:2]
    re = (mag * torch.cos(phase)).reshape(b, n, self.out_channels, -1).movedim(2, 1)  # (B, C, T, bins)
    im = (mag * torch.sin(phase)).reshape(b, n, self.out_channels, -1).movedim(2, 1)
    window = istft.window.float()
    frames = (re @ icos + im @ isin) * window  # (B, C, T, n_fft)
    wave = _overlap_add(frames, istft.ratio, istft.hop)  # (B, C, (T + ratio - 1) hop)
    envelope = _overlap_add((window**2).expand(1, 1, n, -1), istft.ratio, istft.hop)
    a = istft.left
    return wave[..., a : a + n * istft.hop] / envelope[..., a : a + n * istft.hop]


def _overlap_add(frames: Tensor, ratio: int, hop: int) -> Tensor:
    """(..., T, ratio hop) -> (..., (T + ratio - 1) hop): frame t placed at t hop and summed, piece by piece."""
    parts = frames.reshape(*frames.shape[:-1], ratio, hop)  # (..., T, ratio, hop)
    pad = [0, 0, 0, ratio - 1]  # one frame's pieces land on hops t .. t + ratio - 1
    out = F.pad(parts[..., 0, :], pad)
    for k in range(1, ratio):
        out = out + F.pad(parts[..., k, :], [0, 0, k, ratio - 1 - k])
    return out.flatten(-2)


# ------------------------------------------------------------------ graph modules
class EncoderGraph(nn.Module):
    """(B, C, *S) -> codes per level (B, *S'): zero-pad to whole hops, then the tokenizer's encode path."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.hop = model.hop

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        pads: list[int] = []
        for size in reversed(x.shape[2:]):  # F.pad takes the last axis first
            pads += [0, (self.hop - size % self.hop) % self.hop]
        return tuple(self.model.encode_padded(F.pad(x, pads)))


class DecoderGraph(nn.Module):
    """Codes per level (B, *S') -> (B, C, *S), without the postfilter."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, *codes: Tensor) -> Tensor:
        return self.model.decode_padded(list(codes))


class PostfilterGraph(nn.Module):
    """(B, T) -> (B, T): postfilter.sharpen over whole clips, batched.

    Frames of n = 4 h samples every h, the clip preceded by 3 h zeros (so each sample lies in four frames) and
    followed by zeros to whole frames; each frame windowed, its DFT magnitudes raised to the exponent and
    rescaled to the frame's energy, inverted, windowed again; hop s of the output is the sum of its four frames'
    pieces, in sharpen's order, over the summed squared window.
    """

    def __init__(self, sample_rate: int, exponent: float):
        super().__init__()
        self.n = window_size(sample_rate)
        self.h = self.n // OVERLAP
        self.exponent = float(exponent)
        window = torch.hann_window(self.n)
        self.register_buffer("window", window)
        self.register_buffer("envelope", (window.reshape(OVERLAP, self.h) ** 2).sum(0))  # (h,)
        for name, table in zip(("cos", "sin", "icos", "isin"), dft_tables(self.n)):
            self.register_buffer(name, table)

    def forward(self, audio: Tensor) -> Tensor:
        b, t = audio.shape
        h, k = self.h, OVERLAP
        hops = (t + h - 1) // h  # N: output hops
        x = F.pad(audio, [(k - 1) * h, (hops + k - 1) * h - t])  # (B, (N + 2 (k - 1)) h)
        x = x.reshape(b, -1, h)  # (B, N + 6, h) for k = 4
        n_frames = hops + k - 1
        frames = torch.cat([x[:, i : i + n_frames] for i in range(k)], dim=-1) * self.window  # (B, F, n)
        re, im = frames @ self.cos, frames @ self.sin  # (B, F, bins)
        power = re * re + im * im
        gain = torch.exp(torch.log(power.clamp_min(1e-30)) * ((self.exponent - 1) / 2))
        sharp = (power * gain * gain).sum(-1, keepdim=True)
        gain = gain * torch.sqrt(power.sum(-1, keepdim=True) / sharp.clamp_min(1e-30))
        y = ((re * gain) @ self.icos + (im * gain) @ self.isin) * self.window  # (B, F, n)
        parts = y.reshape(b, n_frames, k, h)  # frame i's piece j lies over hop i - (k - 1) + j
        out = parts[:, k - 1 : k - 1 + hops, 0]
        for j in range(1, k):
            out = out + parts[:, k - 1 - j : k - 1 - j + hops, j]
        return (out / self.envelope).reshape(b, -1)[:, :t]


# ------------------------------------------------------------------ export
def level_outputs(tok) -> list[str]:
    """Names of the code inputs/outputs, top first: ["codes"] or ["top", "bottom"]."""
    return list(tok.level_names)


def metadata(tok, graph: str) -> dict[str, str]:
    """The strings every graph carries in metadata_props."""
    summary = {**tokenizer_summary(tok), **tokenizer_location(tok)}
    meta = {
        "vqtok.graph": graph,
        "vqtok.version": __version__,
        "vqtok.opset": str(OPSET),
        "vqtok.search": SEARCH,
        "vqtok.tokenizer": json.dumps(summary, sort_keys=True),
        "vqtok.config": json.dumps(to_dict(tok.config), sort_keys=True),
        "vqtok.level_names": json.dumps(level_outputs(tok)),
        "vqtok.codebooks": json.dumps(tok.codebooks),
    }
    if tok.sample_rate is not None:  # audio: what block-wise and live coding need
        meta["vqtok.context"] = json.dumps(asdict(tok.context), sort_keys=True)
        meta["vqtok.level_db"] = json.dumps(tok.level_db)
        meta["vqtok.postfilter"] = json.dumps(tok.postfilter)
    return meta


def _export(module: nn.Module, args: tuple[Tensor, ...], names_in: list[str], names_out: list[str],
            dynamic: dict[str, dict[int, str]], meta: dict[str, str], path: Path, varargs: bool = False) -> None:
    """torch.onnx.export (dynamo) of `module` to `path`, written atomically with `meta` in metadata_props.
    `varargs`: the module's forward takes its inputs as *args."""
    import onnx

    shapes = {name: {axis: torch.export.Dim.AUTO for axis in axes} for name, axes in dynamic.items()}
    per_input = tuple(shapes[n] for n in names_in)
    with _quiet():
        program = torch.onnx.export(module.eval(), args, input_names=names_in, output_names=names_out, dynamo=True,
                                    opset_version=OPSET, dynamic_shapes=(per_input,) if varargs else per_input,
                                    external_data=False, verbose=False)
    proto = program.model_proto
    for axes_name, axes in dynamic.items():  # readable axis names instead of the exporter's s0, s1, ...
        for value in [*proto.graph.input, *proto.graph.output]:
            if value.name == axes_name:
                for axis, label in axes.items():
                    dim = value.type.tensor_type.shape.dim[axis]
                    if dim.dim_param:  # a dynamic axis: named; a static one keeps its size
                        dim.dim_param = label
    del proto.metadata_props[:]
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name, proto.producer_version = "vqtok", __version__
    onnx.checker.check_model(proto)
    data = proto.SerializeToString()
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


@contextlib.contextmanager
def _quiet():
    """The exporter prints progress lines and warns about optional packages (torchvision): keep the library
    quiet (logging), as everywhere else."""
    quiet = logging.getLogger("torch.onnx")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), \
                warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        quiet.setLevel(level)


def export_onnx(tok, out_dir: str | Path, postfilter_graph: bool = True) -> dict[str, Path]:
    """Write encoder.onnx, decoder.onnx (and postfilter.onnx for audio with a postfilter) and tokenizer.json
    into `out_dir`; returns the written paths by graph name."""
    if tok.fingerprint is None:
        raise VqtokError("the tokenizer has no fingerprint: load it with load_tokenizer (or save it) before export")
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise VqtokError(f"{out}: cannot create the output folder ({err.strerror or err})") from None
    model = exportable_copy(tok)
    names = level_outputs(tok)
    modality = modality_of(tok.config)
    spatial = list(modality.axes)
    example = torch.zeros(2, tok.config.in_channels, *modality.trace_size(tok)).uniform_(-0.5, 0.5)
    written: dict[str, Path] = {}

    books = tok.codebooks  # a multi-codebook level's codes are (B, Q, T'); a prefix n <= Q decodes

    def axes(prefix: str, count: int) -> dict[int, str]:
        first = 2 if books > 1 else 1
        return {0: "batch", **({1: "codebooks"} if books > 1 else {}),
                **{first + i: f"{prefix}{a}" for i, a in enumerate(spatial[:count])}}

    path = out / "encoder.onnx"
    _export(EncoderGraph(model), (example,), ["input"], names,
            {"input": {0: "batch", **{2 + i: a for i, a in enumerate(spatial)}},
             **{n: axes(f"{n}_", tok.dims) for n in names}},
            metadata(tok, "encoder"), path)
    written["encoder"] = path
    with torch.no_grad():
        codes = [c for c in tok.encode_padded(tok.pad(example.to(tok.device)))]
    if books > 2:  # a prefix as the example, so the traced graph keeps the codebook axis dynamic
        codes = [c[:, : books - 1] for c in codes]
    path = out / "decoder.onnx"
    _export(DecoderGraph(model), tuple(c.cpu() for c in codes), names, ["output"],
            {**{n: axes(f"{n}_", tok.dims) for n in names},
             "output": {0: "batch", **{2 + i: f"out_{a}" for i, a in enumerate(spatial)}}},
            metadata(tok, "decoder"), path, varargs=True)
    written["decoder"] = path
    if tok.postfilter is not None and postfilter_graph:  # build_tokenizer gives audio tokenizers alone one
        path = out / "postfilter.onnx"
        _export(PostfilterGraph(tok.sample_rate, tok.postfilter), (example[:, 0],), ["audio"], ["audio_out"],
                {"audio": {0: "batch", 1: "time"}, "audio_out": {0: "batch", 1: "time"}},
                metadata(tok, "postfilter"), path)
        written["postfilter"] = path
    info = {key: (json.loads(value) if key not in ("vqtok.graph", "vqtok.search", "vqtok.version", "vqtok.opset")
                  else value) for key, value in metadata(tok, "all").items()}
    info["graphs"] = {name: p.name for name, p in written.items()}
    path = out / "tokenizer.json"
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(info, indent=1, sort_keys=True)))
    written["tokenizer.json"] = path
    return written


def read_metadata(path: str | Path) -> dict[str, str]:
    """metadata_props of an exported graph as a dict."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in proto.metadata_props}
