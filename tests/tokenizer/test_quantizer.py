"""VectorQuantizer: EMA arithmetic, revival, STE, exact nearest search, eval purity."""

import copy

import pytest
import torch

from vqtok.tokenizer.quantizer import QuantizerConfig, VectorQuantizer, first_min_index, nearest_codes

NO_REVIVAL = dict(dead_ratio=0.0, dead_floor=0.0, decay_warmup=0.0)


def make_vq(k=8, d=4, **cfg) -> VectorQuantizer:
    return VectorQuantizer(k, d, QuantizerConfig(**cfg))


def set_state(vq: VectorQuantizer, codebook: torch.Tensor, counts: torch.Tensor) -> None:
    """Skip init: a given codebook with consistent EMA stats (sums = codebook * counts)."""
    vq.codebook.copy_(codebook)
    vq.cluster_size.copy_(counts)
    vq.embed_sum.copy_(codebook * counts[:, None])
    vq.initted.fill_(True)
    vq._initted = True


def clustered_batch(centres: torch.Tensor, per_code: list[int], spread=0.01, gen=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Vectors near given centres; returns (x (N, D), true code (N,))."""
    xs, ids = [], []
    for j, n in enumerate(per_code):
        xs.append(centres[j] + spread * torch.randn(n, centres.shape[1], generator=gen))
        ids += [j] * n
    return torch.cat(xs), torch.tensor(ids)


def test_decay_zero_gives_mean_of_assigned_vectors():
    k, d = 6, 3
    vq = make_vq(k, d, decay=0.0, **NO_REVIVAL).train()
    centres = torch.arange(k * d, dtype=torch.float).reshape(k, d) * 3.0
    set_state(vq, centres, torch.ones(k))
    x, truth = clustered_batch(centres, [5, 3, 7, 1, 4, 2], spread=0.2)
    vq(x)
    for j in range(k):
        # Laplace smoothing shifts counts by ~eps, so the mean is matched to ~1e-5 relative.
        torch.testing.assert_close(vq.codebook[j], x[truth == j].mean(0), rtol=1e-4, atol=1e-4)


def test_ema_matches_closed_form_over_steps():
    k, d, decay, steps = 4, 2, 0.9, 7
    vq = make_vq(k, d, decay=decay, **NO_REVIVAL).train()
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    n0 = torch.full((k,), 2.0)
    set_state(vq, centres, n0)
    gen = torch.Generator().manual_seed(1)
    n_hand = n0.double().clone()
    s_hand = (centres * n0[:, None]).double()
    for t in range(steps):
        per = [1 + (t + j) % 3 for j in range(k)]
        x, truth = clustered_batch(centres, per, spread=0.5, gen=gen)
        out = vq(x)
        assert torch.equal(out.codes, truth)
        counts = torch.bincount(truth, minlength=k).double()
        sums = torch.zeros(k, d, dtype=torch.float64).index_add_(0, truth, x.double())
        n_hand = decay * n_hand + (1 - decay) * counts
        s_hand = decay * s_hand + (1 - decay) * sums
    torch.testing.assert_close(vq.cluster_size.double(), n_hand, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(vq.embed_sum.double(), s_hand, rtol=1e-6, atol=1e-5)
    eps = vq.config.eps
    smoothed = (n_hand + eps) / (n_hand.sum() + k * eps) * n_hand.sum()
    torch.testing.assert_close(vq.codebook.double(), s_hand / smoothed[:, None], rtol=1e-6, atol=1e-5)
    # The smoothing lives in a temporary: the stored counts carry no eps.
    assert torch.allclose(vq.cluster_size.double(), n_hand, atol=1e-6)


def test_decay_warmup_follows_tf_num_updates():
    vq = make_vq(4, 2, decay=0.99, decay_warmup=10.0, dead_ratio=0.0, dead_floor=0.0).train()
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    set_state(vq, centres, torch.full((4,), 3.0))
    n = torch.tensor(3.0, dtype=torch.float64)
    for step in range(4):
        vq(centres.repeat(2, 1))  # each code gets exactly 2 vectors
        d = min(0.99, (1 + step) / (10 + step))
        n = d * n + (1 - d) * 2
    torch.testing.assert_close(vq.cluster_size.double(), n.expand(4), rtol=1e-6, atol=1e-6)
    assert int(vq.updates) == 4


def test_output_uses_codebook_before_update():
    vq = make_vq(4, 2, decay=0.0, **NO_REVIVAL).train()
    centres = torch.tensor([[0.0, 0.0], [5.0, 0.0], [0.0, 5.0], [5.0, 5.0]])
    set_state(vq, centres, torch.ones(4))
    x = centres + 0.3
    out = vq(x)
    torch.testing.assert_close(out.quantized, centres)
    torch.testing.assert_close(out.commit_loss, torch.tensor(0.25 * 0.09))
    assert not torch.allclose(vq.codebook, centres)  # ...while the stored codebook moved


def test_eval_mode_changes_no_buffer():
    vq = make_vq(16, 4)
    vq.train()(torch.randn(64, 4))
    before = copy.deepcopy(vq.state_dict())
    vq.eval()
    for _ in range(3):
        vq(torch.randn(64, 4) * 5)
    for name, value in vq.state_dict().items():
        assert torch.equal(value, before[name]), name


def test_first_batch_initialises_with_kmeans():
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    x, _ = clustered_batch(centres, [50, 50, 50, 50], spread=0.1)
    vq = make_vq(4, 2, kmeans_iters=10).train()
    out = vq(x)
    # k-means finds the four clusters: every code used, near-zero distortion.
    assert out.usage.item() == 1.0
    assert out.commit_loss.item() < 0.25 * 0.1**2 * 2
    assert bool(vq.initted)


def test_far_away_dead_codes_all_revived_in_one_step():
    k, d = 32, 4
    vq = make_vq(k, d, decay=0.99).train()
    vq(torch.randn(512, d))  # init from data
    far = torch.arange(0, k, 2)  # half the codes moved far away and starved
    vq.codebook[far] = 1e4
    vq.embed_sum[far] = 1e4 * vq.cluster_size[far, None]
    vq.cluster_size[far] = 0.0
    vq.embed_sum[far] = 0.0
    x = torch.randn(512, d)
    out = vq(x)
    assert int(out.revived) == len(far)
    # Revived codes sit on batch vectors, and counts/sums/codebook stay consistent.
    dmin = torch.cdist(vq.codebook[far], x).min(1).values
    assert dmin.max() < 1e-3
    torch.testing.assert_close(vq.codebook, vq._codebook_from_stats())
    # The revived codes are now used.
    assert vq(torch.randn(2048, d)).usage.item() > 0.9


def test_straight_through_gradient_is_exactly_identity():
    vq = make_vq(16, 8).train()
    x = torch.randn(4, 8, 5, 3, requires_grad=True)
    out = vq(x)
    g = torch.randn_like(out.quantized)
    (out.quantized * g).sum().backward()
    assert torch.equal(x.grad, g)


def test_commitment_loss_only_reaches_encoder_and_codebook_gets_no_grad():
    vq = make_vq(16, 8).train()
    assert list(vq.parameters()) == []
    x = torch.randn(32, 8, requires_grad=True)
    out = vq(x)
    out.commit_loss.backward()
    expected = 2 * 0.25 * (x - out.quantized).detach() / x.numel()
    torch.testing.assert_close(x.grad, expected)


def test_nearest_codes_match_fp64_brute_force_and_chunking():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3000, 16, generator=gen)
    cb = torch.randn(300, 16, generator=gen)
    ref = torch.cdist(x.double(), cb.double()).argmin(1)
    assert torch.equal(nearest_codes(x, cb), ref)
    assert torch.equal(nearest_codes(x, cb, chunk_elements=300 * 7), ref)  # 7-row chunks
    assert torch.equal(nearest_codes(x, cb, chunk_elements=1), ref)


@pytest.mark.parametrize("k", [256, 1024, 4096, 320])
def test_grouped_first_min_index_is_argmin_with_its_tie_rule(k):
    gen = torch.Generator().manual_seed(k)
    dist = torch.randn(700, k, generator=gen)
    assert torch.equal(first_min_index(dist), dist.argmin(1))
    # Many exact ties, within and across groups: every row's first minimum, as argmin takes it.
    ties = torch.randint(0, 3, (700, k), generator=gen).float()
    ties[5] = 1.0  # a row that is one tie
    assert torch.equal(first_min_index(ties), ties.argmin(1))
    assert first_min_index(ties)[5] == 0


@pytest.mark.parametrize("k", [256, 1024, 320, 1])
def test_first_min_index_gap_is_runner_up_minus_minimum(k):
    gen = torch.Generator().manual_seed(k)
    dist = torch.randn(500, k, generator=gen)
    dist[7, :2] = 0.5  # a row whose two smallest entries tie: gap 0
    dist[7, 2:] = 1.0
    top = dist.sort(1).values
    index, gap = first_min_index(dist.clone(), with_gap=True)
    assert torch.equal(index, dist.argmin(1))
    if k == 1:
        assert torch.isinf(gap).all()
    else:
        assert torch.equal(gap, top[:, 1] - top[:, 0]) and gap[7] == 0


def test_nearest_codes_with_1024_codes_match_fp64_brute_force():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2000, 64, generator=gen)
    cb = torch.randn(1024, 64, generator=gen)
    assert torch.equal(nearest_codes(x, cb), torch.cdist(x.double(), cb.double()).argmin(1))


def test_large_common_offset_does_not_flip_codes():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2000, 32, generator=gen)
    cb = torch.randn(256, 32, generator=gen)
    offset = torch.randn(32, generator=gen)
    offset = offset / offset.norm() * 200.0
    ref = torch.cdist(x.double(), cb.double()).argmin(1)
    assert torch.equal(nearest_codes(x + offset, cb + offset), ref)


def test_encode_search_table_follows_every_codebook_change():
    """The quantizer keeps its prepared codebook between encodes: each way the codebook changes must remake it."""
    gen = torch.Generator().manual_seed(2)
    vq = make_vq(64, 8).eval()
    x = torch.randn(500, 8, generator=gen)

    def brute() -> torch.Tensor:
        return torch.cdist(x.double(), vq.codebook.double()).argmin(1)

    vq.codebook.copy_(torch.randn(64, 8, generator=gen))
    assert torch.equal(vq.encode(x), brute())
    assert vq.search_table() is vq.search_table()  # kept while the codebook stands
    vq.codebook.mul_(-1.0)  # in place (as the EMA update and k-means write it)
    assert torch.equal(vq.encode(x), brute())
    state = {k: v.clone() for k, v in vq.state_dict().items()}
    state["codebook"] = torch.randn(64, 8, generator=gen)
    vq.load_state_dict(state)  # a loaded checkpoint
    assert torch.equal(vq.encode(x), brute())
    vq.train()(x)  # a training step's EMA update
    vq.eval()
    assert torch.equal(vq.encode(x), brute())
    vq.to(torch.float64).to(torch.float32)  # new buffer objects
    assert torch.equal(vq.encode(x), brute())


def test_ties_go_to_lowest_index():
    cb = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [-1.0, 0.0]])
    x = torch.tensor([[1.0, 0.0], [0.0, 0.0], [-1.0, 0.0]])
    assert nearest_codes(x, cb).tolist() == [0, 0, 3]


def test_fp32_distances_under_autocast():
    vq = make_vq(64, 16).train()
    x = torch.randn(256, 16)
    vq(x)
    vq.eval()
    ref = torch.cdist(x.double(), vq.codebook.double()).argmin(1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = vq(x)
    assert out.codes.dtype == torch.int64
    assert torch.equal(out.codes, ref)
    assert out.quantized.dtype == torch.float32


def test_eval_decode_of_encode_equals_forward_output():
    vq = make_vq(32, 6).train()
    vq(torch.randn(4, 6, 10, 7))
    vq.eval()
    x = torch.randn(3, 6, 9, 5)
    out = vq(x)
    assert torch.equal(vq.decode(vq.encode(x)), out.quantized)
    assert torch.equal(vq.encode(x), out.codes)
    assert out.codes.shape == (3, 9, 5)


def test_mask_keeps_padding_out_of_statistics():
    vq = make_vq(4, 2, decay=0.0, **NO_REVIVAL).train()
    centres = torch.tensor([[0.0, 0.0], [5.0, 0.0], [0.0, 5.0], [5.0, 5.0]])
    set_state(vq, centres, torch.ones(4))
    x = torch.stack([centres[0] + 0.1, centres[1] + 0.2, torch.tensor([100.0, 100.0])])  # last is padding
    x = x.t()[None]  # (1, D, 3), channel-first 1D
    mask = torch.tensor([[[1.0, 1.0, 0.0]]])
    out = vq(x, mask=mask)
    torch.testing.assert_close(out.commit_loss, 0.25 * torch.tensor((0.01 * 2 + 0.04 * 2) / 2 / 2))
    assert vq.cluster_size[3].item() == 0.0  # the padding vector (nearest to code 3) was not counted
    assert out.usage.item() == 0.5


def test_perplexity_and_usage_of_uniform_codes():
    vq = make_vq(4, 2, **NO_REVIVAL).eval()
    centres = torch.tensor([[0.0, 0.0], [5.0, 0.0], [0.0, 5.0], [5.0, 5.0]])
    set_state(vq, centres, torch.ones(4))
    out = vq(centres.repeat(3, 1))
    torch.testing.assert_close(out.perplexity, torch.tensor(4.0))
    assert out.usage.item() == 1.0


def test_encode_fragile_marks_latents_within_rtol_of_a_cell_boundary():
    q = VectorQuantizer(4, 2)
    q.codebook.copy_(torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 0.0], [3.0, 0.0]]))  # codes 1 and 2 coincide
    x = torch.tensor([[0.4, 0.0], [1.1, 0.0]])  # (N, D)
    # x0: code 0, its cell ends at 0.5 (0.1 away, 0.25 of |x0|); x1: code 1 (its duplicate 2 does not count), the
    # cell spans 0.5 .. 2.0: 0.6 away, 0.545 of |x1|
    for rtol, expected in [(0.2, [False, False]), (0.24, [False, False]), (0.26, [True, False]), (0.54, [True, False]),
                           (0.55, [True, True])]:
        codes, fragile = q.encode(x, fragile_rtol=rtol)
        assert codes.tolist() == [0, 1] and fragile.tolist() == expected
    assert torch.equal(q.encode(x), codes)


def test_fragile_is_exactly_whether_a_move_of_rtol_can_change_the_code():
    gen = torch.Generator().manual_seed(5)
    cb = torch.randn(64, 8, generator=gen)
    x = torch.randn(4000, 8, generator=gen)
    rtol = 0.02
    codes, fragile = nearest_codes(x, cb, fragile_rtol=rtol)
    assert 0 < fragile.sum() < len(x)  # both kinds present
    x64, e = x.double(), cb.double()

    def nearest(points):  # fp64 brute force, without cdist's matmul shortcut
        return torch.cdist(points, e, compute_mode="donot_use_mm_for_euclid_dist").argmin(1)

    dist = (x64[:, None] - e[None]).square().sum(-1)
    assert torch.equal(codes, nearest(x64))
    # each row's nearest boundary, by brute force: the bisector of e_c and e_k nearest to x
    sep = (e[codes][:, None] - e[None]).norm(dim=-1)  # (N, K)
    b = (dist - dist.gather(1, codes[:, None])) / (2 * sep)
    b[sep == 0] = torch.inf
    k_star = b.argmin(1)
    room = b.amin(1) / x64.norm(dim=1)
    assert torch.equal(fragile, room <= rtol)
    # a fragile row crosses into another cell when moved past its boundary, by at most rtol |x|
    normal = (e[k_star] - e[codes]) / sep.gather(1, k_star[:, None])
    moved = x64 + normal * (b.amin(1) * (1 + 1e-6))[:, None]
    assert (nearest(moved[fragile]) != codes[fragile]).all()
    # a sturdy row keeps its code under any move shorter than rtol |x|: random directions, and straight at the boundary
    for _ in range(20):
        step = torch.randn(x.shape, generator=gen, dtype=torch.float64)
        step = step / step.norm(dim=1, keepdim=True) * (0.999 * rtol * x64.norm(dim=1, keepdim=True))
        assert torch.equal(nearest(x64 + step)[~fragile], codes[~fragile])
    moved = x64 + normal * (0.999 * rtol * x64.norm(dim=1))[:, None]
    assert torch.equal(nearest(moved)[~fragile], codes[~fragile])


def test_near_ties_below_fp32_resolution_are_decided_in_fp64():
    """x a hair off the bisector of two codewords: the fp32 GEMM alone picks the wrong one now and then, the exact
    search never does."""
    gen = torch.Generator().manual_seed(7)
    e = torch.randn(2, 64, generator=gen, dtype=torch.float64) * 3
    normal = (e[1] - e[0]) / (e[1] - e[0]).norm()
    on_plane = torch.randn(2000, 64, generator=gen, dtype=torch.float64) * 5
    on_plane -= ((on_plane - (e[0] + e[1]) / 2) @ normal)[:, None] * normal  # onto the bisector
    side = torch.where(torch.rand(2000, generator=gen) < 0.5, -1.0, 1.0).double()
    x = (on_plane + (side * 1e-6)[:, None] * normal).float()  # about 1e-6 from it, either side
    cb = e.float()
    truth = torch.cdist(x.double(), cb.double(), compute_mode="donot_use_mm_for_euclid_dist").argmin(1)
    assert (nearest_codes(x, cb, exact=False) != truth).any()  # the test has teeth: fp32 alone errs
    assert torch.equal(nearest_codes(x, cb), truth)
    assert torch.equal(nearest_codes(x, cb, chunk_elements=2 * 3), truth)
