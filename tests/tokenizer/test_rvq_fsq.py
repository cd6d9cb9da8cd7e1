"""Residual VQ and FSQ against hand computations: sums, prefixes, dropout, rounding, index bijection."""

import math

import pytest
import torch

from vqtok.tokenizer.fsq import FSQ
from vqtok.tokenizer.quantizer import QuantizerConfig, nearest_codes
from vqtok.tokenizer.rvq import ResidualVQ


def trained_rvq(codebooks=3, k=8, dim=4, dropout=0.0, seed=0):
    torch.manual_seed(seed)
    q = ResidualVQ(codebooks, k, dim, QuantizerConfig(kmeans_iters=2), dropout=dropout)
    q.train()
    for _ in range(3):
        q(torch.randn(4, dim, 30))
    return q.eval()


def test_rvq_residual_sum_identity_by_hand():
    q = trained_rvq()
    x = torch.randn(2, 4, 11)
    codes = q.encode(x)  # (B, Q, T)
    assert codes.shape == (2, 3, 11)
    flat = x.permute(0, 2, 1).reshape(-1, 4)
    residual, total = flat.clone(), torch.zeros_like(flat)
    for s, stage in enumerate(q.stages):
        c = nearest_codes(residual, stage.codebook)  # stage s quantizes what the earlier stages left
        assert torch.equal(c, codes[:, s].reshape(-1))
        total = total + stage.codebook[c]
        residual = flat - total
    assert torch.equal(q.decode(codes).permute(0, 2, 1).reshape(-1, 4), total)
    out = q(x)
    assert torch.equal(out.codes, codes)
    assert torch.equal(out.quantized, q.decode(codes))  # eval forward == decode(encode(x))


def test_rvq_prefixes_are_coarser_codes_of_the_same_input():
    q = trained_rvq(codebooks=4)
    x = torch.randn(3, 4, 20)
    full = q.encode(x)
    errors = []
    for n in range(1, 5):
        part = q.encode(x, codebooks=n)
        assert torch.equal(part, full[:, :n])  # a prefix is the first n stages of the full code
        assert torch.equal(q(x, codebooks=n).quantized, q.decode(part))
        errors.append(float((q.decode(part) - x).pow(2).mean()))
    assert errors == sorted(errors, reverse=True)  # each stage takes error away on average
    with pytest.raises(ValueError, match="between 1 and 4"):
        q.encode(x, codebooks=5)


def test_rvq_straight_through_gradient_is_identity():
    q = trained_rvq()
    x = torch.randn(2, 4, 7, requires_grad=True)
    out = q(x)
    g = torch.randn_like(out.quantized)
    (out.quantized * g).sum().backward()
    assert torch.equal(x.grad, g)


def test_rvq_dropout_draws_prefixes_uniformly():
    q = ResidualVQ(4, 8, 2, dropout=0.5).train()
    torch.manual_seed(1)
    active = torch.cat([q._active_stages(torch.zeros(1000, 2, 1), 4) for _ in range(20)])  # (20000, Q)
    n = active.sum(1)
    # every row is a prefix: active stages come first
    assert torch.equal(active, torch.arange(4)[None] < n[:, None])
    # half kept all 4 stages; the other half drew 1..4 uniformly: P(n=4) = 0.5 + 0.125, P(n=k<4) = 0.125
    share = torch.bincount(n, minlength=5)[1:].float() / len(n)
    assert torch.allclose(share, torch.tensor([0.125, 0.125, 0.125, 0.625]), atol=0.012)


def test_rvq_dropped_items_leave_stage_statistics_alone():
    torch.manual_seed(0)
    cfg = QuantizerConfig(kmeans_iters=1, dead_ratio=0.0, dead_floor=0.0)  # no revival: counts are plain EMA
    q = ResidualVQ(2, 4, 2, cfg, dropout=1.0).train()
    q(torch.randn(8, 2, 5))  # k-means init and a first EMA step
    active = torch.tensor([[True, True], [True, False]] * 4)  # items 1, 3, 5, 7 stop after stage 1
    q._active_stages = lambda x, n: active
    before = q.stages[1].cluster_size.clone()
    d = float(q.stages[1]._decay())
    books = [stage.codebook.clone() for stage in q.stages]  # the step quantizes with these, then updates them
    out = q(torch.randn(8, 2, 5))
    counts = torch.bincount(out.codes[active[:, 1], 1].reshape(-1), minlength=4).float()  # items 0, 2, 4, 6 only
    assert torch.allclose(q.stages[1].cluster_size, d * before + (1 - d) * counts, atol=1e-6)
    # and their output sums only the stages they use
    first, second = (books[s][out.codes[:, s]].movedim(-1, 1) for s in range(2))  # (B, D, T) each
    assert torch.equal(out.quantized[1], first[1])
    assert torch.equal(out.quantized[0], first[0] + second[0])


def test_rvq_usage_and_entropy_per_stage():
    q = trained_rvq(codebooks=2, k=4, dim=2)
    x = torch.randn(1, 2, 400)
    out = q(x)
    for s in range(2):
        counts = torch.bincount(out.codes[:, s].reshape(-1), minlength=4).float()
        p = counts / counts.sum()
        assert float(out.usage[s]) == pytest.approx(float((counts > 0).float().mean()))
        assert float(out.perplexity[s]) == pytest.approx(math.exp(-float((p * p.clamp_min(1e-10).log()).sum())), rel=1e-5)


def test_fsq_rounding_by_hand():
    f = FSQ([8, 5])
    # bound(0) = 0 for both (the shift centres even level counts on a half step)
    assert torch.allclose(f.bound(torch.zeros(1, 2)), torch.zeros(1, 2), atol=1e-6)
    x = torch.tensor([[0.0, 0.0], [10.0, 10.0], [-10.0, -10.0]])
    codes = f.encode(x)
    # saturated: dim 0 (8 levels) -> 3 or -4, dim 1 (5 levels) -> 2 or -2; digits +4, +2; index d0 + 8 * d1
    assert codes.tolist() == [4 + 8 * 2, 7 + 8 * 4, 0 + 8 * 0]
    assert torch.allclose(f.decode(codes), torch.tensor([[0.0, 0.0], [0.75, 1.0], [-1.0, -1.0]]))


def test_fsq_index_bijection_and_forward():
    f = FSQ([4, 3, 5])
    assert f.codebook_size == 60
    codes = torch.arange(60)
    vectors = f.decode(codes)
    assert len({tuple(v.tolist()) for v in vectors}) == 60
    # the rounded levels of each code vector encode back to it: bound() is near the identity around levels
    levels = vectors * torch.tensor([2, 1, 2])
    assert torch.equal(f._to_index(levels), codes)
    x = torch.randn(2, 3, 9)
    out = f(x)
    assert torch.equal(out.codes, f.encode(x))
    assert torch.allclose(out.quantized, f.decode(out.codes))
    assert float(out.commit_loss) == 0.0
    with pytest.raises(ValueError, match=r"\[0, 60\)"):
        f.decode(torch.tensor([60]))


def test_fsq_straight_through_gradient():
    f = FSQ([5, 5])
    x = torch.randn(4, 2, requires_grad=True)
    out = f(x)
    out.quantized.sum().backward()
    # d quantized / dx = d bound / dx / (L // 2): the rounding passes the gradient through unchanged
    half = torch.tensor([2.0, 2.0]) * (1 + f.eps)
    expected = (1 - torch.tanh(x.detach()) ** 2) * half / 2
    assert torch.allclose(x.grad, expected, atol=1e-6)


def test_docs_quantizer_snippet_runs():
    from pathlib import Path

    page = (Path(__file__).resolve().parents[2] / "docs" / "multi-codebook.md").read_text()
    block = page.split("```python\n", 1)[1].split("```", 1)[0]
    scope: dict = {}
    exec(compile(block, "docs/multi-codebook.md", "exec"), scope)  # noqa: S102
    assert scope["codes"].shape == (1, 100) and scope["approx"].shape == (1, 64, 100)
