"""A new decoder head from this file alone: one module that states its receptive field, one registry line; the
block-wise decoder then sizes its context from it. A module without a rule is refused by name."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from vqtok.tokenizer import LevelConfig, TokenizerConfig, build_tokenizer
from vqtok.tokenizer.heads import DECODER_HEADS
from vqtok.tokenizer.receptive import input_interval


class RepeatUp(nn.Module):
    """(B, C, T) -> (B, C, T * s): each frame held for s samples."""

    def __init__(self, stride: int):
        super().__init__()
        self.stride = stride

    def forward(self, x):
        return x.repeat_interleave(self.stride, dim=-1)

    def input_interval(self, out):  # sample o comes from frame o // s
        return out[0] // self.stride, out[1] // self.stride


class RepeatDecoder(nn.Sequential):
    """conv (3 taps) at the code rate, hold each frame, conv (5 taps) at the sample rate."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__(nn.Conv1d(in_channels, 8, 3, padding=1), RepeatUp(stride), nn.ELU(),
                         nn.Conv1d(8, out_channels, 5, padding=2))


@pytest.fixture
def repeat_head(monkeypatch):
    monkeypatch.setitem(DECODER_HEADS, "repeat", lambda dims, c_in, level, c_out, act:
                        RepeatDecoder(c_in, c_out, math.prod(level.strides)))


def test_a_registered_head_decodes_block_wise_from_its_own_receptive_field(repeat_head):
    torch.manual_seed(0)
    tok = build_tokenizer(TokenizerConfig(dims=1, sample_rate=8000, net=LevelConfig(
        channels=[8, 16], strides=[4, 5], res_depth=1, code_dim=4, codebook_size=16, decoder_head="repeat"))).eval()
    assert isinstance(tok.decoder, RepeatDecoder)
    # sample o needs frames (o - 2) // 20 - 1 .. (o + 2) // 20 + 1: two hops either side at a hop's edges
    assert input_interval(tok.decoder, (1000, 1000)) == (48, 51)
    assert (tok.context.decode_left, tok.context.decode_right) == (2, 2)
    codes = torch.randint(0, 16, (3 * tok.block_frames + 7,))
    with torch.no_grad():
        whole = tok.decode(codes, postfilter=False).numpy()[0]  # (T,)
    long = tok.decode_long(codes, chunk_seconds=0.7, postfilter=False).numpy()[0]
    assert long.shape == whole.shape and np.abs(long - whole).max() < 1e-5


def test_a_module_without_a_rule_is_named():
    class Mixer(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv1d(1, 1, 3)

        def forward(self, x):
            return self.conv(x).flip(-1)  # reverses time: no rule can be guessed from its children

    with pytest.raises(TypeError, match="no receptive-field rule for Mixer: give it an input_interval"):
        input_interval(Mixer(), (0, 0))
