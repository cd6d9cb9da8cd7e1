"""Encoder distillation: a lighter encoder trained to reproduce a trained tokenizer's latents.

The student is a tokenizer whose decoder and codebook are the teacher's, copied and left as they are, so its
codes decode as the teacher's do; only its encoder differs: fewer residual blocks a stage
(`encoder_res_depth`), or a patch stem where the teacher has a conv stem. Training (`loss.teacher` in a
recipe, tokenizer/train.py) fits the student's encoder output to the teacher's.

The student starts as close to the teacher as its architecture allows: each stage keeps the teacher's first
residual blocks (the small dilations), extra blocks start as the identity, and a conv stem with the first
strided conv after it, which have no activation between them, fold exactly into the patch stem's one conv.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn

from vqtok.config import differences, to_dict
from vqtok.errors import VqtokError
from vqtok.tokenizer.base import Tokenizer, TokenizerConfig
from vqtok.tokenizer.checkpoint import build_tokenizer
from vqtok.tokenizer.nets import Encoder, Patchify


def fold_stem(stem: nn.Conv1d, down: nn.Conv1d, patch: Patchify, target: nn.Conv1d) -> None:
    """Set `target` so that target(patch(x)) = down(stem(x)) on every output frame whose input window lies
    inside x (at the edges the two zero-pad at different places).

    down(stem(x))[o, t] reads x at s*t + d for offsets d = j + i - pad_down - pad_stem (j, i: tap indices);
    target(patch(x))[o, t] reads x at s*t + s*(k - pad_target) + r (k: tap, r: position in the run of s).
    """
    s = patch.stride
    if stem.stride != (1,) or stem.dilation != (1,) or down.dilation != (1,) or down.stride != (s,):
        raise ValueError("fold_stem needs a stride-1 stem and a downsampling conv with the patch's stride")
    if target.stride != (1,) or target.dilation != (1,) or target.in_channels != stem.in_channels * s:
        raise ValueError("fold_stem needs a stride-1 target conv over the patch's channels")
    (k_stem,), (p_stem,), (k_down,), (p_down,) = stem.kernel_size, stem.padding, down.kernel_size, down.padding
    (k_target,), (p_target,) = target.kernel_size, target.padding
    if -p_down - p_stem < -s * p_target or k_down + k_stem - 2 - p_down - p_stem > s * (k_target - p_target) - 1:
        raise ValueError(f"a kernel-{k_target} patch conv cannot hold a kernel-{k_stem} stem and a kernel-{k_down} "
                         f"strided conv")
    w_stem, w_down = stem.weight.detach(), down.weight.detach()  # (C0, Cin, k_stem), (C1, C0, k_down)
    weight = torch.zeros_like(target.weight)  # (C1, Cin * s, k_target): channel ci * s + r holds run sample r
    for j in range(k_down):
        for i in range(k_stem):
            k, r = divmod(j + i - p_down - p_stem + s * p_target, s)
            weight[:, r::s, k] += w_down[:, :, j] @ w_stem[:, :, i]  # (C1, C0) @ (C0, Cin)
    bias = w_down.sum(2) @ stem.bias.detach() if stem.bias is not None else 0.0
    if down.bias is not None:
        bias = bias + down.bias.detach()
    with torch.no_grad():
        target.weight.copy_(weight)
        if target.bias is not None:
            target.bias.copy_(bias)


def _copy(dst: nn.Module, src: nn.Module) -> None:
    dst.load_state_dict(src.state_dict())


def init_encoder(student: Encoder, teacher: Encoder) -> None:
    """Start `student` from `teacher`'s weights: stems (folded when the student has the patch stem), each
    stage's strided conv and first residual blocks, the output conv. Extra student blocks start as the
    identity (last conv zeroed)."""
    s, t = student.parts(), teacher.parts()
    if len(s.stages) != len(t.stages):
        raise ValueError("the student and teacher encoders need the same stages")
    if student.stem == teacher.stem:
        for a, b in zip(s.stem, t.stem):
            _copy(a, b)
    elif student.stem == "patch" and teacher.stem == "conv":
        fold_stem(t.stem[0], t.stages[0].down, s.stem[0], s.stem[1])
    else:
        raise ValueError(f"a {teacher.stem} stem cannot start a {student.stem} stem")
    for a, b in zip(s.stages, t.stages):
        if a.down is not None and b.down is not None:
            _copy(a.down, b.down)
        for i, block in enumerate(a.blocks):
            if i < len(b.blocks):
                _copy(block, b.blocks[i])
            else:
                block.to_identity()
    for a, b in zip(s.tail, t.tail):
        _copy(a, b)


ENCODER_FIELDS = ("encoder_res_depth", "encoder_stem")


def student_from(teacher: Tokenizer, config: TokenizerConfig) -> Tokenizer:
    """The tokenizer `config` describes, holding `teacher`'s decoder and codebook, its encoder started from the
    teacher's (init_encoder). `config` may differ from the teacher's only in its encoder (ENCODER_FIELDS),
    activation and quantizer training settings."""
    if config.arch != "vqvae" or teacher.config.arch != "vqvae":
        raise VqtokError("loss.teacher distils single-level tokenizers (arch vqvae)")
    expected = replace(teacher.config, activation=config.activation, quantizer=config.quantizer,
                       net=replace(teacher.config.net, **{f: getattr(config.net, f) for f in ENCODER_FIELDS}))
    wrong = differences(to_dict(config), to_dict(expected))
    if wrong:
        raise VqtokError("loss.teacher: the recipe's model may differ from the teacher's only in "
                         f"{', '.join(ENCODER_FIELDS)} and activation; it differs in (recipe != teacher) "
                         + "; ".join(wrong))
    student = build_tokenizer(config)
    teacher_state = teacher.state_dict()
    student.load_state_dict({k: v for k, v in teacher_state.items() if not k.startswith("encoder.")}, strict=False)
    try:
        init_encoder(student.encoder, teacher.encoder)
    except ValueError as err:
        raise VqtokError(f"loss.teacher: {err}") from None
    return student


@dataclass
class DistillOutput:
    loss: Tensor  # squared error over squared target, on real frames
    agree: Tensor  # fraction of real frames whose student code is the teacher's


class EncoderDistillation(nn.Module):
    """loss = |student(x) - teacher(x)|^2 / |teacher(x)|^2 over the code frames holding real samples.

    Holds the student's encoder (trained) and the teacher's (frozen, eval mode); `quantizer` (the shared,
    frozen codebook) only scores how many codes agree.
    """

    def __init__(self, student: nn.Module, teacher: nn.Module, quantizer: nn.Module):
        super().__init__()
        self.student, self.teacher = student, teacher.eval().requires_grad_(False)
        self.quantizer = [quantizer]  # a list: not a submodule, so not part of DDP's parameters

    def train(self, mode: bool = True) -> EncoderDistillation:
        self.student.train(mode)
        return self

    def forward(self, x: Tensor, frame_mask: Tensor | None = None) -> DistillOutput:
        """x: (B, C, T); frame_mask: (B, 1, T / stride), 1 on frames holding real samples."""
        with torch.no_grad():
            target = self.teacher(x).float()
        latent = self.student(x).float()  # (B, D, T')
        weight = torch.ones_like(target[:, :1]) if frame_mask is None else frame_mask.to(target.dtype)
        loss = ((latent - target) ** 2 * weight).sum() / (target**2 * weight).sum().clamp_min(1e-12)
        with torch.no_grad():
            quantizer = self.quantizer[0]
            same = (quantizer.encode(latent.detach()) == quantizer.encode(target)).to(weight.dtype)  # (B, T')
            agree = (same * weight[:, 0]).sum() / weight.sum().clamp_min(1)
        return DistillOutput(loss, agree)
