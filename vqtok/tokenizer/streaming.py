"""Long audio and batches: receptive fields, block-wise encode/decode, and exact mixed-length batches.

Why blocks. Convolutions on CPU do not give bit-identical results for inputs of different lengths or
batch sizes (oneDNN picks kernels by shape; a matmul with 3 rows sums differently from one with 3000),
so "encode the file in chunks of S seconds" cannot promise the same codes for every S by carrying
context alone: a float difference of 1e-7 can flip an argmin that sits on a near-tie. The codes of a
long clip are therefore *defined* block-wise, independently of how the caller chunks it:

* The clip, zero-padded at the end to a multiple of `hop` (as `Tokenizer.encode` does), is cut into
  canonical blocks of `block_frames` hops: block k covers samples [k B hop, (k + 1) B hop).
* Block k is encoded alone (batch of one) from the window [start - left, end + right] clipped to the
  clip, where left/right are the encoder's receptive field rounded up to whole hops. The window's
  first sample is a multiple of `hop`, so every strided layer sees the same grid as in the whole clip,
  and window edges that are clip edges see exactly the zero padding the whole clip sees.
* The codes of the block's own frames are kept.

Every window's shape and content depend only on the clip, so the codes are bit-identical whatever the
chunk size used to read it (`chunk_seconds` only sets how much audio is held at once). A clip of at most
one block is one window, the clip itself: its codes are exactly `Tokenizer.encode`'s. For longer clips
the codes equal `Tokenizer.encode` on the whole clip except, in principle, where a float-level
difference meets a near-tie (none was found on a 10-minute file; bench/encode.py measures it).

Decoding uses the same blocks with the decoder's receptive field: bit-identical for any chunk size, and
equal to `Tokenizer.decode` of the whole sequence to float tolerance (about 1e-6).

`encode_batch` pads clips of different lengths into one batch and re-zeroes the padding in front of
every convolution, which reproduces each clip's own border exactly. What batching still changes is the
float rounding inside the convolutions: on the CPU the encoder's latents then differ from the alone
computation by up to 1.9e-6 of their norm (shipped speech models and mnist; bench/batch_noise.py). The
code search is exact (quantizer.nearest_codes: the true nearest code, fp64 where fp32 cannot tell), so a
code can change only where the latent sits that close to the boundary of its code's cell. Windows holding
a frame within `LATENT_RTOL` of one are re-encoded alone; the codes are the ones each clip gets from
`encode_long`. On 100 test utterances 15% of speech-16k's 4 s windows (18% for speech-8k) went back alone,
and 1.3% of 1,000 mnist images. On one CPU thread batching then encodes mnist 2.3x faster than one image at
a time (64 at a time), while audio is a little slower batched (0.8x, 8 windows at a time): its batched
convolutions are no faster than one window's, and the windows sent back cost twice.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from vqtok.tokenizer.postfilter import Postfilter
from vqtok.tokenizer.receptive import Interval, input_interval  # noqa: F401 (tokenizers take it from here)

# Canonical block length: about this many seconds of audio.
# Each block pays its context twice and a fixed cost per layer call (oneDNN's per-call set-up): on one thread,
# 4 s blocks encode the shipped speech models 1.3-1.4x faster than 1 s blocks and decode them 1.4x faster
# (bench/encode.py), for ~4 s of audio held at once.
BLOCK_SECONDS = 4.0
# A block is also at least this many times the larger context, so the context read on both sides costs at most
# ~1/14 extra work: speech-lm-16k's 0.3 s of context makes its blocks 8.4 s (4 s blocks cost it 14%), while the
# other shipped models' 0.06 s leaves theirs at 4 s.
BLOCK_PER_CONTEXT = 28
# A frame whose latent lies within this fraction of its norm from its code cell's boundary is re-encoded alone
# (encode_batch). Batched and alone latents differed by at most 1.9e-6 of the norm on the CPU (bench/batch_noise.py:
# 1.4e-6 over 247,000 speech-16k frames, 1.9e-6 over 49,000 mnist ones), 5 times less. On a GPU (TF32 convolutions
# by default, about 11 bits) nothing has been measured, so the bound there is 1e-2.
LATENT_RTOL = {"cpu": 1e-5}
LATENT_RTOL_OTHER = 1e-2

@dataclass(frozen=True)
class LevelPath:
    """One level's data flow for receptive fields: its downsampling and an interval map, either code frames ->
    input samples (encode) or output samples -> code frames (decode). Tokenizers describe their own."""

    downsample: int
    interval: Callable[[Interval], Interval]


@dataclass(frozen=True)
class Context:
    """Samples of context a block needs on each side, whole hops, for encoding and for decoding."""

    encode_left: int
    encode_right: int
    decode_left: int  # in hops (top-level frames)
    decode_right: int


def compute_context(tok) -> Context:
    """Receptive fields of `tok`'s encoder (samples) and decoder (hops), rounded up to whole hops."""
    hop = tok.hop
    base = 1000  # an interior position, far from any border, a multiple of every stride
    enc_left = enc_right = 0
    for down, path in ((p.downsample, p.interval) for p in tok.encode_paths()):
        for phase in range(hop // down):  # every frame position within one hop
            j = base * (hop // down) + phase
            lo, hi = path((j, j))
            enc_left = max(enc_left, j * down - lo)
            enc_right = max(enc_right, hi - (j * down + down - 1))
    dec_left = dec_right = 0
    for down, path in ((p.downsample, p.interval) for p in tok.decode_paths()):
        for phase in range(hop):  # every output sample position within one hop
            o = base * hop + phase
            lo, hi = path((o, o))  # frames of this level
            frame = o // down
            # in samples of this level's frames, then in hops below
            dec_left = max(dec_left, (frame - lo) * down)
            dec_right = max(dec_right, (hi - frame) * down)

    def hops(n: int) -> int:
        return -(-max(n, 0) // hop)

    return Context(hops(enc_left) * hop, hops(enc_right) * hop, hops(dec_left), hops(dec_right))


def block_frames(tok) -> int:
    """Hops per canonical block: about BLOCK_SECONDS of audio, at least BLOCK_PER_CONTEXT x the context."""
    ctx = tok.context
    rate = tok.sample_rate
    widest = max(ctx.encode_left, ctx.encode_right, ctx.decode_left * tok.hop, ctx.decode_right * tok.hop)
    return max(math.ceil(BLOCK_SECONDS * rate / tok.hop), math.ceil(BLOCK_PER_CONTEXT * widest / tok.hop), 1)


# ------------------------------------------------------------------ long encode
def _level_ratio(tok) -> list[int]:
    """Frames per hop, per level (top first)."""
    return [tok.hop // d for d in tok.downsample]


@torch.no_grad()
def encode_window(tok, window: np.ndarray | Tensor) -> list[Tensor]:
    """One window (T,) (T a multiple of hop) encoded alone -> per-level codes (frames,) int64, top first."""
    x = torch.as_tensor(window, dtype=torch.float32, device=tok.device).reshape(1, 1, -1)  # (1, 1, T)
    return [c[0] for c in tok.encode_padded(x)]


def stream_encode(tok, pieces: Iterable[np.ndarray]) -> Iterator[list[np.ndarray]]:
    """Encode a mono signal arriving as consecutive pieces (any sizes) block by block.

    Yields per-level code pieces (top first, int64 numpy) in order; their concatenation is the clip's
    codes. Memory holds one block plus context plus the current piece.
    """
    hop, B, ctx = tok.hop, tok.block_frames, tok.context
    ratio = _level_ratio(tok)
    buf = np.zeros(0, dtype=np.float32)
    buf_start = 0  # global index of buf[0]; always a multiple of hop
    next_frame = 0  # next hop index to emit
    total = 0

    def emit(stop_hops: int, end: int) -> list[np.ndarray]:
        """Encode hops [next_frame, stop_hops) from a window ending at `end` (global samples)."""
        a = max(0, next_frame * hop - ctx.encode_left)
        window = buf[a - buf_start : end - buf_start]
        codes = encode_window(tok, window)
        first = next_frame - a // hop
        count = stop_hops - next_frame
        return [c[..., first * r : (first + count) * r].cpu().numpy() for c, r in zip(codes, ratio)]

    for piece in pieces:
        piece = np.asarray(piece, dtype=np.float32).reshape(-1)
        buf = np.concatenate([buf, piece])
        total += len(piece)
        # Emit every block whose right context has fully arrived.
        while (next_frame + B) * hop + ctx.encode_right <= total:
            stop = next_frame + B
            yield emit(stop, stop * hop + ctx.encode_right)
            next_frame = stop
            keep = max(0, next_frame * hop - ctx.encode_left)  # drop what no later window needs
            buf, buf_start = buf[keep - buf_start :], keep
    if total == 0:
        return
    padded = math.ceil(total / hop) * hop
    buf = np.concatenate([buf, np.zeros(padded - total, dtype=np.float32)])  # Tokenizer._pad's zeros
    n_hops = padded // hop
    while next_frame < n_hops:
        stop = min(next_frame + B, n_hops)
        yield emit(stop, min(padded, stop * hop + ctx.encode_right))
        next_frame = stop


def split_pieces(x: np.ndarray, size: int | None) -> Iterator[np.ndarray]:
    """Consecutive pieces of `size` samples (the whole array for size None)."""
    if size is None or size >= len(x):
        yield x
        return
    for start in range(0, len(x), size):
        yield x[start : start + size]


def join_levels(parts: list[list[np.ndarray]], levels: int) -> list[np.ndarray]:
    """Concatenate per-level pieces from `stream_encode` along time (the last axis: codes may be (Q, frames))."""
    return [np.concatenate([p[i] for p in parts], axis=-1) if parts else np.zeros(0, np.int64) for i in range(levels)]


# ------------------------------------------------------------------ long decode
@torch.no_grad()
def stream_decode(tok, levels: list[np.ndarray | Tensor], length: int | None = None,
                  chunk_hops: int | None = None, postfilter: bool = True) -> Iterator[np.ndarray]:
    """Decode per-level 1-D codes (top first) block by block; yields consecutive (samples,) float32 pieces.

    `length` trims the output (default: frames x hop). `chunk_hops` groups blocks per yielded piece. The
    tokenizer's postfilter (postfilter.py), if it has one and `postfilter` is true, runs over the pieces as they
    come (its pieces then lag the decoder's by up to ~0.6 s; the last one comes at the end).
    """
    pieces = _decoded_pieces(tok, levels, length, chunk_hops)
    if not postfilter or tok.postfilter is None:
        yield from pieces
        return
    post = Postfilter(tok.sample_rate, tok.postfilter)
    for piece in pieces:
        yield post.add(torch.from_numpy(piece)).numpy()
    yield post.flush().numpy()


def _decoded_pieces(tok, levels: list[np.ndarray | Tensor], length: int | None,
                    chunk_hops: int | None) -> Iterator[np.ndarray]:
    """stream_decode without the postfilter."""
    hop, B, ctx = tok.hop, tok.block_frames, tok.context
    ratio = _level_ratio(tok)
    levels = [torch.as_tensor(np.asarray(c), dtype=torch.long) for c in levels]
    n_hops = levels[0].shape[-1] // ratio[0]  # time is the last axis: (frames,) or (Q, frames)
    if any(c.shape[-1] != n_hops * r for c, r in zip(levels, ratio)):
        raise ValueError(f"level lengths {[c.shape[-1] for c in levels]} do not match {ratio} frames per hop")
    length = n_hops * hop if length is None else length
    group = max(1, (chunk_hops or B) // B)
    out: list[np.ndarray] = []
    produced = 0
    for k, start in enumerate(range(0, n_hops, B)):
        stop = min(start + B, n_hops)
        a, b = max(0, start - ctx.decode_left), min(n_hops, stop + ctx.decode_right)
        window = [c[..., a * r : b * r].to(tok.device)[None] for c, r in zip(levels, ratio)]
        y = tok.decode_padded(window)[0, 0]  # (samples,) mono
        piece = y[(start - a) * hop : (stop - a) * hop].float().cpu().numpy()
        piece = piece[: max(0, length - produced)]
        produced += len(piece)
        out.append(piece)
        if (k + 1) % group == 0:
            yield np.concatenate(out)
            out = []
    if out:
        yield np.concatenate(out)


# ------------------------------------------------------------------ batches
@contextlib.contextmanager
def _masked_convs(model: nn.Module, sizes: Tensor, full: tuple[int, ...]):
    """Zero every conv input outside each item's valid region, so padding acts like the conv's own border.

    sizes: (B, dims) valid size per item at input resolution (multiples of hop); full: padded batch size.
    A conv sees exactly what it sees when the item is alone: zeros past the item's end (every activation
    maps 0 to 0, so residual branches keep the padding at zero between convs). A batch without padding
    needs no mask (on one CPU thread the masks cost speech-16k's encoder half again its time).
    """
    if bool((sizes == torch.tensor(full)).all()):
        yield
        return

    def pre_hook(module, args):
        x = args[0]  # (B, C, *S)
        mask = torch.ones(x.shape[0], *x.shape[2:], dtype=torch.bool, device=x.device)
        for axis, (n_full, n_here) in enumerate(zip(full, x.shape[2:])):
            valid = (sizes[:, axis] * n_here) // n_full  # (B,)
            shape = [1] * (1 + len(full))
            shape[axis + 1] = n_here
            pos = torch.arange(n_here, device=x.device).reshape(shape)
            mask = mask & (pos < valid.reshape([-1] + [1] * len(full)).to(x.device))
        return (x * mask[:, None].to(x.dtype),) + tuple(args[1:])

    handles = [m.register_forward_pre_hook(pre_hook) for m in model.modules()
               if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.ConvTranspose1d, nn.ConvTranspose2d))]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def stack_windows(windows: list[Tensor], device: torch.device) -> tuple[Tensor, Tensor, tuple[int, ...]]:
    """Windows (C, *S) of different sizes zero-padded into one batch (B, C, *full); also sizes (B, dims) and full."""
    sizes = torch.tensor([list(w.shape[1:]) for w in windows])  # (B, dims)
    full = tuple(int(s) for s in sizes.max(0).values)
    x = torch.zeros(len(windows), windows[0].shape[0], *full, device=device)
    for i, w in enumerate(windows):
        x[(i, slice(None)) + tuple(slice(0, s) for s in w.shape[1:])] = w.to(device)
    return x, sizes, full


def item_windows(tok, items: list) -> tuple[list[Tensor], list[tuple[int, int, int]]]:
    """The windows (C, *S) `encode_batch` encodes for clips or images, and per window its owner: (item, first hop
    kept within the window, hops kept; -1 for a whole image)."""
    windows: list[Tensor] = []
    owners: list[tuple[int, int, int]] = []
    for i, item in enumerate(items):
        x, _ = tok.as_batch(item)  # (1, C, *S)
        x = tok.pad(x)[0].cpu()  # (C, *S) padded to hop
        if tok.sample_rate is not None:  # audio: the canonical blocks (block_frames is counted in its rate)
            for a, b, start, stop in canonical_windows(tok, x.shape[-1]):
                windows.append(x[:, a:b])
                owners.append((i, start - a // tok.hop, stop - start))
        else:
            windows.append(x)
            owners.append((i, 0, -1))
    return windows, owners


@torch.no_grad()
def encode_windows_batched(tok, windows: list[Tensor]) -> list[list[Tensor]]:
    """Encode windows (C, *S) of different sizes (each a multiple of hop) in one batch.

    Returns per window its per-level codes, exactly those of `tok.encode_padded(window[None])`.
    """
    if not windows:
        return []
    device = tok.device
    if not tok.marks_fragile_codes:  # no way to tell which batched codes are safe: each window alone
        return [[c[0] for c in tok.encode_padded(w[None].to(device))] for w in windows]
    x, sizes, full = stack_windows(windows, device)
    if len(windows) == 1:  # a batch of one is the alone computation
        return [[c[0] for c in tok.encode_padded(x)]]
    with _masked_convs(tok, sizes, full):
        rtol = LATENT_RTOL.get(device.type, LATENT_RTOL_OTHER)
        codes, fragile = tok.encode_padded(x, fragile_rtol=rtol)  # per level (B, *S') each
    results = []
    for i in range(len(windows)):
        per_level = []
        safe = True
        for c, f in zip(codes, fragile):
            shape = tuple(int(s) * c.shape[1 + a] // full[a] for a, s in enumerate(sizes[i]))
            index = (i,) + tuple(slice(0, n) for n in shape)
            per_level.append(c[index])
            safe = safe and not bool(f[index].any())
        if not safe:  # a latent near a cell boundary: the batch's float rounding could move it across
            per_level = [c[0] for c in tok.encode_padded(windows[i][None].to(device))]
        results.append(per_level)
    return results


def canonical_windows(tok, n_samples: int) -> list[tuple[int, int, int, int]]:
    """(window start, window end, first hop kept, stop hop) for a clip of n_samples; see the module doc."""
    hop, B, ctx = tok.hop, tok.block_frames, tok.context
    padded = math.ceil(n_samples / hop) * hop
    n_hops = padded // hop
    out = []
    for start in range(0, n_hops, B):
        stop = min(start + B, n_hops)
        out.append((max(0, start * hop - ctx.encode_left), min(padded, stop * hop + ctx.encode_right), start, stop))
    return out


def encode_batch(tok, items: list, batch_size: int | None = None) -> list:
    """Encode clips (or images) of different sizes; returns per item what `encode_long` (audio) or
    `encode` (images) gives it alone: a tensor per item, or [top, bottom] for a VQ-VAE-2.
    """
    device = tok.device
    windows, owners = item_windows(tok, items)
    step = batch_size or len(windows) or 1
    # Similar sizes together wastes less padding; the results do not depend on the grouping.
    order = sorted(range(len(windows)), key=lambda j: tuple(windows[j].shape[1:]))
    results: list[list[Tensor] | None] = [None] * len(windows)
    for s in range(0, len(order), step):
        chunk = order[s : s + step]
        for j, codes in zip(chunk, encode_windows_batched(tok, [windows[j] for j in chunk])):
            results[j] = codes
    ratio = _level_ratio(tok)
    per_item: list[list[list[Tensor]]] = [[] for _ in items]
    for (i, first, count), codes in zip(owners, results):
        if count < 0:  # a whole image
            per_item[i].append(codes)
        else:
            per_item[i].append([c[..., first * r : (first + count) * r] for c, r in zip(codes, ratio)])
    out = []
    for parts in per_item:
        levels = [torch.cat([p[lv] for p in parts], dim=-1).to(device) for lv in range(tok.levels)]
        out.append(levels[0] if tok.levels == 1 else levels)
    return out

