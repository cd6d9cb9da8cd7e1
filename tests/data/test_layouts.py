"""Multi-codebook layouts against hand-written examples; each an exact round trip."""

import pytest
import torch

from vqtok.data import layouts

CODES = torch.tensor([[1, 2, 3], [4, 5, 6]])  # Q = 2 codebooks of K = 10, T = 3 frames


def test_flat_by_hand_and_back():
    seq = layouts.flatten(CODES, 10)
    assert seq.tolist() == [1, 14, 2, 15, 3, 16]  # frame-major, codebook 1 offset by K
    assert torch.equal(layouts.unflatten(seq, 2, 10), CODES)
    with pytest.raises(ValueError, match="codebook range"):
        layouts.unflatten(torch.tensor([14, 1]), 2, 10)  # codebook 1 where codebook 0 belongs


def test_delay_by_hand_and_back():
    out = layouts.delay(CODES, pad=-1)
    assert out.tolist() == [[1, 2, 3, -1], [-1, 4, 5, 6]]
    assert torch.equal(layouts.undelay(out), CODES)


def test_stack_and_random_round_trips():
    assert layouts.stack(CODES).tolist() == [[1, 4], [2, 5], [3, 6]]
    g = torch.Generator().manual_seed(0)
    codes = torch.randint(0, 1024, (8, 57), generator=g)
    assert torch.equal(layouts.unflatten(layouts.flatten(codes, 1024), 8, 1024), codes)
    assert torch.equal(layouts.undelay(layouts.delay(codes, 1024)), codes)
    assert torch.equal(layouts.stack(codes).t(), codes)
    with pytest.raises(ValueError, match="unknown layout 'zigzag'"):
        layouts.apply(codes, "zigzag", 1024, 1024)
