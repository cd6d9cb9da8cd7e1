"""Encoder distillation: the stem fold is exact, the student starts from the teacher, the loss is what it says."""

from dataclasses import replace

import pytest
import torch

from vqtok import VqtokError
from vqtok.tokenizer import build_tokenizer
from vqtok.tokenizer.base import LevelConfig, TokenizerConfig
from vqtok.tokenizer.distill import EncoderDistillation, fold_stem, student_from
from vqtok.tokenizer.nets import Encoder, Patchify, conv, downsample


def teacher_config(**net) -> TokenizerConfig:
    level = LevelConfig(channels=[8, 16], strides=[2, 5], res_depth=3, dilation_growth=3, code_dim=8,
                        codebook_size=32)
    return TokenizerConfig(arch="vqvae", dims=1, sample_rate=8000, net=replace(level, **net), activation="hard_elu")


def trained_like(config: TokenizerConfig) -> torch.nn.Module:
    """A tokenizer with random weights everywhere, codebook included (zero-initialised parts would hide bugs)."""
    torch.manual_seed(0)
    tok = build_tokenizer(config)
    with torch.no_grad():
        for p in tok.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
        tok.quantizer.codebook.copy_(torch.randn_like(tok.quantizer.codebook))
    return tok.eval()


@pytest.mark.parametrize("stride,c_in", [(2, 1), (4, 1), (5, 2)])
def test_fold_stem_equals_stem_then_strided_conv_away_from_the_edges(stride, c_in):
    torch.manual_seed(stride)
    stem, down = conv(1, c_in, 6, 7, padding=3), downsample(1, 6, 10, stride)
    patch, target = Patchify(stride), conv(1, c_in * stride, 10, 7, padding=3)
    fold_stem(stem, down, patch, target)
    x = torch.randn(3, c_in, 40 * stride)
    with torch.no_grad():
        want, got = down(stem(x)), target(patch(x))
    assert got.shape == want.shape == (3, 10, 40)
    edge = 2  # frames whose windows reach into the zero padding
    torch.testing.assert_close(got[..., edge:-edge], want[..., edge:-edge], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(got[..., :1], want[..., :1], atol=1e-3)  # the stem's bias is padded differently


def test_fold_stem_refuses_a_patch_conv_too_small_for_the_stem():
    stem, down = conv(1, 1, 4, 7, padding=3), downsample(1, 4, 4, 2)
    with pytest.raises(ValueError, match="cannot hold"):
        fold_stem(stem, down, Patchify(2), conv(1, 2, 4, 3, padding=1))


def test_student_keeps_decoder_and_codebook_and_starts_as_the_teacher():
    teacher = trained_like(teacher_config())
    # patch stem and one extra (identity) block a stage: the same function as the teacher's encoder inside
    student = student_from(teacher, teacher_config(encoder_stem="patch", encoder_res_depth=4)).eval()
    for name, value in teacher.state_dict().items():
        if not name.startswith("encoder."):
            assert torch.equal(student.state_dict()[name], value), name
    x = torch.randn(2, 1, 2000)
    with torch.no_grad():
        want, got = teacher.encoder(x), student.encoder(x)
    assert got.shape == want.shape == (2, 8, 200)
    # the two differ where the stem's padding is reached, and the dilated blocks spread that over ~14 frames
    edge = 1 + teacher.context.encode_left // 10
    torch.testing.assert_close(got[..., edge:-edge], want[..., edge:-edge], rtol=1e-4, atol=1e-4)
    assert not torch.allclose(got[..., :1], want[..., :1], atol=1e-3)
    # the same architecture is an exact copy
    same = student_from(teacher, teacher.config).eval()
    with torch.no_grad():
        assert torch.equal(same.encoder(x), want)


def test_a_shallower_student_keeps_the_first_blocks_of_each_stage():
    teacher = trained_like(teacher_config())
    student = student_from(teacher, teacher_config(encoder_res_depth=2)).eval()
    t, s = teacher.encoder.parts(), student.encoder.parts()
    assert [len(stage.blocks) for stage in s.stages] == [2, 2]
    for a, b in zip(s.stages, t.stages):
        for block_s, block_t in zip(a.blocks, b.blocks[:2]):  # dilations 1 and 3, as in the teacher
            assert block_s.block[1].dilation == block_t.block[1].dilation
            for p, q in zip(block_s.parameters(), block_t.parameters()):
                assert torch.equal(p, q)


def test_student_from_names_every_field_outside_the_encoder_that_differs():
    teacher = trained_like(teacher_config())
    with pytest.raises(VqtokError, match="channels.*codebook_size|codebook_size.*channels"):
        student_from(teacher, teacher_config(channels=[8, 32], codebook_size=64))
    with pytest.raises(VqtokError, match="cannot start a conv stem"):
        student_from(trained_like(teacher_config(encoder_stem="patch")), teacher_config())


def test_distillation_loss_is_relative_squared_error_on_real_frames():
    teacher = trained_like(teacher_config())
    student = Encoder(1, 1, [8, 16], [2, 5], 8, 2, 3, "hard_elu")
    d = EncoderDistillation(student, teacher.encoder, teacher.quantizer)
    x = torch.randn(2, 1, 400)
    frames = torch.ones(2, 1, 40)
    frames[1, :, 30:] = 0
    out = d(x, frames)
    with torch.no_grad():
        z, t = student(x), teacher.encoder(x)
    w = frames
    want = ((z - t) ** 2 * w).sum() / (t**2 * w).sum()
    torch.testing.assert_close(out.loss, want)
    same = (teacher.quantizer.encode(z) == teacher.quantizer.encode(t)).float()
    torch.testing.assert_close(out.agree, (same * w[:, 0]).sum() / w.sum())
    out.loss.backward()  # gradients reach the student only
    assert all(p.grad is not None for p in student.parameters())
    assert all(p.grad is None and not p.requires_grad for p in teacher.encoder.parameters())
    # a student that is the teacher scores 0 and full agreement
    exact = EncoderDistillation(teacher.encoder, teacher.encoder, teacher.quantizer)(x, frames)
    # (0 but for float rounding: the teacher runs without autograd, whose 1-D blocks sum in another order)
    assert float(exact.loss) < 1e-10 and float(exact.agree) == 1.0
