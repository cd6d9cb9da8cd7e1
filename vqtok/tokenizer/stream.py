"""Live coding: `StreamEncoder` / `StreamDecoder` take audio or codes in chunks of any size and give back codes or
audio as soon as the receptive field allows (`Tokenizer.stream_encoder()` / `stream_decoder()`).

Encoding. Frame j (hop j, samples [j hop, (j + 1) hop)) depends on the samples `tok.context.encode_left` before it
and `encode_right` after it. Each `push` encodes, in one window, every frame whose right context has arrived and
that was not given back yet: the window starts `encode_left` samples (whole hops) before the first such frame, so
every strided layer sees the grid of the whole clip, and ends at the last arrived sample it needs. `flush` pads
the clip with zeros to whole hops, as `Tokenizer.encode` does, and encodes the rest. A frame's codes are then
those of the whole clip in exact arithmetic; in floats the windows' lengths change the convolutions' rounding
(oneDNN picks kernels by shape), and the exact code search (quantizer.nearest_codes) gives another code only
where a latent lies that close to the boundary of its code's cell. bench/stream.py measures the share of frames
identical to the offline `encode_long` (what `vqtok encode` writes).

Decoding mirrors it with `decode_left` / `decode_right` (hops): audio of hop j comes out once code j +
`decode_right` is in. The postfilter (postfilter.py) runs frame by frame behind the decoder, which adds one
postfilter window (32 ms) of latency; its output is the offline postfilter's exactly.

Latency: a frame's codes come out `encode_right` samples plus one hop after the frame starts; decoded audio comes
`decode_right` + 1 hops (plus the postfilter's window) after its code. `vqtok info` lists both per model.

Level: `vqtok encode` brings a clip to the tokenizer's `level_db` with a gain measured over the whole clip, which
a live stream does not have; the stream encodes audio as it comes (`gain_db` applies a fixed gain instead).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from vqtok.errors import VqtokError
from vqtok.tokenizer.postfilter import Postfilter, window_size
from vqtok.tokenizer.streaming import encode_window


def _check_audio_tokenizer(tok) -> None:
    if tok.sample_rate is None:
        raise VqtokError("streaming is for audio tokenizers (dims 1 with a sample_rate); this one codes images")


def _frames_per_hop(tok) -> list[int]:
    """Code frames per hop, per level (top first)."""
    return [tok.hop // d for d in tok.downsample]


def _as_codes(tok, levels: list[Tensor]) -> Tensor | list[Tensor]:
    return levels[0] if tok.levels == 1 else levels


class StreamEncoder:
    """Mono audio in chunks (any sizes, at the tokenizer's rate) -> codes as soon as they are final.

    `push(chunk)` returns the new codes: (n,) int64 for a one-level tokenizer, [top, bottom] for a VQ-VAE-2
    (possibly empty); `flush()` the rest at the end of the clip. The pieces joined are the clip's codes.
    """

    def __init__(self, tok, gain_db: float = 0.0):
        _check_audio_tokenizer(tok)
        self.tok = tok
        self.hop, self.ctx = tok.hop, tok.context
        self.ratio = _frames_per_hop(tok)
        self.gain = np.float32(10 ** (gain_db / 20))
        self.buffer = np.zeros(0, np.float32)
        self.buffer_start = 0  # sample index of buffer[0]; a multiple of hop
        self.next_hop = 0  # first hop whose codes are not given back yet
        self.total = 0  # samples pushed
        self.closed = False

    @property
    def latency(self) -> float:
        """Seconds from a frame's first sample to its codes: the encoder's right context plus one hop."""
        return (self.ctx.encode_right + self.hop) / self.tok.sample_rate

    def push(self, chunk, sample_rate: int | None = None) -> Tensor | list[Tensor]:
        """Take the next samples (T,) (float, finite; `sample_rate`, if given, must be the tokenizer's)."""
        if self.closed:
            raise VqtokError("this StreamEncoder was flushed; start a new one for the next clip")
        x = self._checked(chunk, sample_rate)
        self.buffer = np.concatenate([self.buffer, x * self.gain])
        self.total += len(x)
        ready = (self.total - self.ctx.encode_right) // self.hop  # hops whose right context has arrived
        return self._encode(ready, ready * self.hop + self.ctx.encode_right)

    def flush(self) -> Tensor | list[Tensor]:
        """The codes of the remaining frames: the clip ends here, zero-padded to whole hops."""
        if self.closed:
            raise VqtokError("this StreamEncoder was already flushed")
        self.closed = True
        padded = math.ceil(self.total / self.hop) * self.hop
        self.buffer = np.concatenate([self.buffer, np.zeros(padded - self.total, np.float32)])
        return self._encode(padded // self.hop, padded)

    def _encode(self, stop: int, end: int) -> Tensor | list[Tensor]:
        """Codes of hops [next_hop, stop) from the window of samples [next_hop hop - encode_left, end)."""
        if stop <= self.next_hop:
            return _as_codes(self.tok, [torch.zeros(*shape[:-1], 0, dtype=torch.long)
                                        for shape in self.tok.code_shape(self.hop)])
        start = max(0, self.next_hop * self.hop - self.ctx.encode_left)
        window = self.buffer[start - self.buffer_start : end - self.buffer_start]
        codes = encode_window(self.tok, window)  # per level (frames,), frame 0 at sample `start`
        first, count = self.next_hop - start // self.hop, stop - self.next_hop
        # time is the last axis: (frames,), or (codebooks, frames) for a multi-codebook level
        out = [c[..., first * r : (first + count) * r].cpu() for c, r in zip(codes, self.ratio)]
        self.next_hop = stop
        keep = max(0, stop * self.hop - self.ctx.encode_left)  # the next window's first sample
        self.buffer, self.buffer_start = self.buffer[keep - self.buffer_start :], keep
        return _as_codes(self.tok, out)

    def _checked(self, chunk, sample_rate: int | None) -> np.ndarray:
        if sample_rate is not None and int(sample_rate) != self.tok.sample_rate:
            raise VqtokError(f"audio at {sample_rate} Hz, but this tokenizer codes {self.tok.sample_rate} Hz; "
                             "resample it first")
        x = chunk.detach().cpu().numpy() if isinstance(chunk, Tensor) else np.asarray(chunk)
        if x.dtype.kind != "f":
            hint = " (int16 PCM: divide by 32768)" if x.dtype.kind in "iu" else ""
            raise VqtokError(f"audio chunk of dtype {x.dtype}; pass float samples in [-1, 1]{hint}")
        if x.ndim > 1 and all(n == 1 for n in x.shape[:-1]):
            x = x.reshape(-1)
        if x.ndim != 1:
            raise VqtokError(f"audio chunk of shape {tuple(x.shape)}; pass one mono chunk (T,)")
        if not np.isfinite(x).all():
            raise VqtokError(f"audio chunk holds {int((~np.isfinite(x)).sum())} NaN or Inf samples")
        return x.astype(np.float32, copy=False)


class StreamDecoder:
    """Codes in chunks (any number of frames) -> audio as soon as it is final, through the postfilter if the
    tokenizer has one (`postfilter=False`: the decoder's output as it is).

    `push(codes)` takes (n,) integer codes for a one-level tokenizer, [top, bottom] for a VQ-VAE-2 (whole hops:
    `hop // downsample` frames of each level per hop), and returns the new samples (T,) float32;
    `flush()` the rest at the end. The pieces joined are `decode`'s output to float tolerance.
    """

    def __init__(self, tok, postfilter: bool = True):
        _check_audio_tokenizer(tok)
        self.tok = tok
        self.hop, self.ctx = tok.hop, tok.context
        self.ratio = _frames_per_hop(tok)
        self.post = Postfilter(tok.sample_rate, tok.postfilter, group=1) if postfilter and tok.postfilter else None
        self.codes: list[np.ndarray] | None = None  # per level (..., frames) from hop `codes_start` on
        self.codes_start = 0
        self.next_hop = 0  # first hop whose audio is not given back yet
        self.hops = 0  # hops of codes pushed
        self.closed = False

    @property
    def latency(self) -> float:
        """Seconds from a code's arrival to the end of its audio: the decoder's right context plus one hop, plus
        the postfilter's window when it runs."""
        post = window_size(self.tok.sample_rate) if self.post is not None else 0
        return ((self.ctx.decode_right + 1) * self.hop + post) / self.tok.sample_rate

    def push(self, codes) -> Tensor:
        """Take the next codes; return the audio samples now final."""
        if self.closed:
            raise VqtokError("this StreamDecoder was flushed; start a new one for the next clip")
        levels = self._checked(codes)
        if self.codes is None:
            self.codes = levels
        elif any(a.shape[:-1] != c.shape[:-1] for a, c in zip(self.codes, levels)):
            raise VqtokError(f"codes of shape {[c.shape for c in levels]} after {[a.shape for a in self.codes]}; "
                             "keep the codebook count of the first push")
        else:
            self.codes = [np.concatenate([a, c], axis=-1) for a, c in zip(self.codes, levels)]
        self.hops += levels[0].shape[-1] // self.ratio[0]
        return self._decode(self.hops - self.ctx.decode_right, last=False)

    def flush(self) -> Tensor:
        """The remaining audio: the codes end here."""
        if self.closed:
            raise VqtokError("this StreamDecoder was already flushed")
        self.closed = True
        return self._decode(self.hops, last=True)

    def _decode(self, stop: int, last: bool) -> Tensor:
        """Audio of hops [next_hop, stop) from the codes of hops [next_hop - decode_left, hops)."""
        audio = torch.zeros(0)
        if stop > self.next_hop:
            a = max(0, self.next_hop - self.ctx.decode_left)
            window = [torch.from_numpy(c[..., (a - self.codes_start) * r :])[None].to(self.tok.device)
                      for c, r in zip(self.codes, self.ratio)]  # per level (1, frames)
            with torch.no_grad():
                y = self.tok.decode_padded(window)[0, 0]  # (samples,) from hop a on
            audio = y[(self.next_hop - a) * self.hop : (stop - a) * self.hop].float().cpu()
            self.next_hop = stop
            keep = max(0, stop - self.ctx.decode_left)
            self.codes = [c[..., (keep - self.codes_start) * r :] for c, r in zip(self.codes, self.ratio)]
            self.codes_start = keep
        if self.post is None:
            return audio
        audio = self.post.add(audio)
        return torch.cat([audio, self.post.flush()]) if last else audio

    def _checked(self, codes) -> list[np.ndarray]:
        levels = [codes] if self.tok.levels == 1 or isinstance(codes, (Tensor, np.ndarray)) else list(codes)
        if len(levels) != self.tok.levels:
            raise VqtokError(f"codes for {len(levels)} level(s); this tokenizer has {self.tok.levels}")
        out = []
        shapes = self.tok.code_shape(self.hop)  # per level (frames,) or (codebooks, frames)
        for i, (c, k, r) in enumerate(zip(levels, self.tok.codebook_size, self.ratio)):
            a = c.detach().cpu().numpy() if isinstance(c, Tensor) else np.asarray(c)
            name = self.tok.level_names[i]
            if a.dtype.kind not in "iu":
                raise VqtokError(f"codes '{name}' of dtype {a.dtype}; codes are integers")
            if a.ndim != len(shapes[i]) or (a.ndim == 2 and not 0 < a.shape[0] <= shapes[i][0]):
                want = "(n,)" if len(shapes[i]) == 1 else f"(codebooks <= {shapes[i][0]}, n)"
                raise VqtokError(f"codes '{name}' of shape {tuple(a.shape)}; pass one stream's frames {want}")
            if a.size and (int(a.min()) < 0 or int(a.max()) >= k):
                raise VqtokError(f"codes '{name}' hold ids {int(a.min())}..{int(a.max())}, outside the {k}-code "
                                 "codebook")
            if a.shape[-1] % r:
                raise VqtokError(f"codes '{name}': {a.shape[-1]} frames, not whole hops of {r} frames")
            out.append(a.astype(np.int64))
        if len({a.shape[-1] // r for a, r in zip(out, self.ratio)}) > 1:
            raise VqtokError(f"level lengths {[a.shape[-1] for a in out]} cover different spans; give {self.ratio} "
                             "frames per hop on each level")
        return out
