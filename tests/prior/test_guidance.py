"""Classifier-free guidance: the null class, label dropping, guided sampling against two separate passes;
and the Transformer's one decode loop (stop token, batched 1-D bottom level)."""

import json

import numpy as np
import pytest
import torch
from einops import rearrange
from safetensors import safe_open
from safetensors.torch import save_file

from vqtok import VqtokError
from vqtok.prior import CausalTransformer, GatedPixelCNN, draw, filter_logits, sample_pixelcnn, sample_transformer
from vqtok.prior.checkpoint import load_prior, save_prior
from vqtok.prior.generate import sample_codes
from vqtok.prior.guidance import drop_labels, mix
from vqtok.prior.layout import MapLayout, SequenceLayout
from vqtok.prior.model import CodePrior
from vqtok.prior.sampling import decode_transformer

W = 2.5  # a guidance weight far enough from 1 that guided and plain samples differ


def _seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _guided(cond_logits: torch.Tensor, uncond_logits: torch.Tensor, w: float) -> torch.Tensor:
    """The formula written out, on two separately computed logit tensors."""
    return uncond_logits.float() + w * (cond_logits.float() - uncond_logits.float())


def _pixelcnn(num_classes=3, cond_codes=None, null_class=True):
    torch.manual_seed(0)
    return GatedPixelCNN(12, channels=16, layers=3, kernel_size=5, num_classes=num_classes, cond_codes=cond_codes,
                         cond_channels=8, null_class=null_class).eval()


def _transformer(num_classes=3, cond_codes=None, class_bias=False, max_len=24, null_class=True):
    torch.manual_seed(0)
    return CausalTransformer(15, dim=32, layers=2, heads=4, max_len=max_len, num_classes=num_classes,
                             cond_codes=cond_codes, cond_ratio=4 if cond_codes else None, class_bias=class_bias,
                             null_class=null_class).eval()


def test_mix_and_drop_labels_numbers():
    logits = torch.tensor([[1.0, 2.0, 4.0], [0.0, 1.0, 1.0]])  # rows: conditional, unconditional (B = 1)
    assert torch.equal(mix(logits, 3.0), torch.tensor([[3.0, 4.0, 10.0]]))  # 0 + 3 * (1 - 0), 1 + 3 * 1, 1 + 3 * 3
    assert torch.equal(mix(logits, 1.0), logits[:1]) and torch.equal(mix(logits, 0.0), logits[1:])
    labels = torch.arange(10).repeat(1000)
    torch.manual_seed(0)
    dropped = drop_labels(labels, 0.1, null=10)
    share = (dropped == 10).float().mean().item()
    assert share == pytest.approx(0.1, abs=0.01)
    kept = dropped != 10
    assert torch.equal(dropped[kept], labels[kept])
    assert drop_labels(labels, 0.0, null=10) is labels


@pytest.mark.parametrize("cond_shape, filters", [(None, {}), ((2, 3), {"top_k": 6, "temperature": 0.8})])
def test_guided_pixelcnn_equals_the_formula_on_two_forward_passes(cond_shape, filters):
    model = _pixelcnn(cond_codes=5 if cond_shape else None)
    n, shape = 4, (4, 6)
    labels = torch.tensor([0, 1, 2, 1])
    null = torch.full_like(labels, 3)
    cond = torch.randint(0, 5, (n, *cond_shape)) if cond_shape else None
    gen = _seeded(5)
    ref = torch.zeros(n, *shape, dtype=torch.long)
    with torch.no_grad():
        for i in range(shape[0]):
            for j in range(shape[1]):
                logits = _guided(model(ref, labels, cond)[:, :, i, j], model(ref, null, cond)[:, :, i, j], W)
                ref[:, i, j] = draw(filter_logits(logits, **filters), gen)
    fast = sample_pixelcnn(model, n, shape, labels, cond, generator=_seeded(5), guidance=W, **filters)
    assert torch.equal(fast, ref)
    plain = sample_pixelcnn(model, n, shape, labels, cond, generator=_seeded(5), **filters)
    assert not torch.equal(plain, ref)  # the guidance really changed the draws


@pytest.mark.parametrize("cond, class_bias, use_cache", [(False, False, True), (True, True, True), (False, True, False)])
def test_guided_transformer_equals_the_formula_on_two_forward_passes(cond, class_bias, use_cache):
    model = _transformer(cond_codes=6 if cond else None, class_bias=class_bias)
    n, length = 5, 24
    labels = torch.tensor([0, 1, 2, 0, 1])
    null = torch.full_like(labels, 3)
    top = torch.randint(0, 6, (n, 6)) if cond else None
    gen = _seeded(9)
    ref = torch.zeros(n, length, dtype=torch.long)
    with torch.no_grad():
        for t in range(length):
            logits = _guided(model.next_logits(ref[:, :t], labels, top), model.next_logits(ref[:, :t], null, top), W)
            ref[:, t] = draw(filter_logits(logits, top_p=0.9), gen)
    fast = sample_transformer(model, n, length, labels, top, top_p=0.9, generator=_seeded(9), use_cache=use_cache,
                              guidance=W)
    assert torch.equal(fast, ref)
    plain = sample_transformer(model, n, length, labels, top, top_p=0.9, generator=_seeded(9))
    assert not torch.equal(plain, ref)


def test_guidance_one_is_the_plain_conditional_sampler_code_for_code():
    """w = 1 with a null class gives exactly the codes of the same weights without a null class."""
    with_null, without = _pixelcnn(), _pixelcnn(null_class=False)
    state = {k: (v[:3] if "class_bias" in k else v) for k, v in with_null.state_dict().items()}
    without.load_state_dict(state)
    labels = torch.tensor([2, 0, 1])
    a = sample_pixelcnn(with_null, 3, (5, 5), labels, generator=_seeded(1), guidance=1.0)
    b = sample_pixelcnn(without, 3, (5, 5), labels, generator=_seeded(1))
    assert torch.equal(a, b)
    t_null, t_plain = _transformer(class_bias=True), _transformer(class_bias=True, null_class=False)
    t_plain.load_state_dict({k: (v[:3] if k.startswith("class_") else v) for k, v in t_null.state_dict().items()})
    a = sample_transformer(t_null, 3, 20, labels, generator=_seeded(1), guidance=1.0)
    assert torch.equal(a, sample_transformer(t_plain, 3, 20, labels, generator=_seeded(1)))


def _changes(logits_of, codes: torch.Tensor, j: int) -> torch.Tensor:
    """(T,) bool: which positions' logits change when code j (flat index) is changed."""
    other = codes.clone().reshape(-1)
    other[j] = (other[j] + 1) % 12
    with torch.no_grad():
        a, b = logits_of(codes), logits_of(other.reshape(codes.shape))
    return (a - b).abs().amax(-1) > 0


def test_guided_logits_stay_causal():
    """Changing code j moves the guided logits of positions after j only (raster order), for both priors."""
    pix, gpt = _pixelcnn(), _transformer()
    labels, null = torch.tensor([1]), torch.tensor([3])

    def pix_logits(codes):  # (1, H, W) -> (H * W, K), guided
        pair = pix(torch.cat([codes, codes]), torch.cat([labels, null]))
        return mix(rearrange(pair, "b k h w -> (b h w) k"), W)  # conditional rows first, as mix expects

    def gpt_logits(codes):  # (1, T) -> (T, K), guided
        pair = gpt(torch.cat([codes, codes]), torch.cat([labels, null]))  # (2, T, K)
        return mix(rearrange(pair, "b t k -> (b t) k"), W)

    maps, seqs = torch.randint(0, 12, (1, 4, 5)), torch.randint(0, 12, (1, 20))
    for logits_of, codes, size in ((pix_logits, maps, 20), (gpt_logits, seqs, 20)):
        for j in (0, 7, 19):
            moved = _changes(logits_of, codes, j)
            assert not moved[: j + 1].any(), f"position <= {j} sees code {j}"
            if j < size - 1:
                assert moved[j + 1 :].any()


def _layout(network="pixelcnn", cond_dropout=0.5, **extra) -> MapLayout:
    base = dict(network=network, level="codes", level_index=0, codebook_size=12, shape=[4, 4], num_classes=3,
                class_counts=[1, 1, 1], cond_dropout=cond_dropout)
    return MapLayout(**{**base, **extra})


@pytest.mark.parametrize("network, config, name", [
    ("pixelcnn", {"channels": 8, "layers": 2, "kernel_size": 3}, "net.gated.0.class_bias.weight"),
    ("transformer", {"dim": 16, "layers": 1, "heads": 2, "max_len": 16}, "net.class_start.weight"),
])
def test_null_class_is_trained_only_with_cond_dropout(network, config, name):
    torch.manual_seed(0)
    prior = CodePrior(_layout(network), config).train()
    assert prior.state_dict()[name].shape[0] == 4  # three classes and the null class
    codes, labels = torch.randint(0, 12, (64, 4, 4)), torch.randint(0, 3, (64,))

    def null_row_after_a_step(dropout: float) -> torch.Tensor:
        prior.layout.cond_dropout = dropout
        before = dict(prior.named_parameters())[name].detach().clone()
        opt = torch.optim.SGD(prior.parameters(), lr=0.5)
        nll, count, _ = prior.nll(codes, labels)
        opt.zero_grad()
        (nll / count).backward()
        opt.step()
        return (dict(prior.named_parameters())[name].detach() - before)[3]

    assert null_row_after_a_step(0.5).abs().max() > 0
    assert torch.equal(null_row_after_a_step(0.0), torch.zeros(config.get("dim", 16)))
    # evaluation (NLL reports) is always the conditional model: no label is dropped
    prior.layout.cond_dropout = 0.5
    prior.eval()
    with torch.no_grad():
        first, second = prior.nll(codes, labels)[0], prior.nll(codes, labels)[0]
        assert torch.equal(first, second)
    # a recipe without cond_dropout builds no null class
    assert CodePrior(_layout(network, cond_dropout=0.0), config).state_dict()[name].shape[0] == 3


def test_old_checkpoint_without_null_class_loads_samples_and_refuses_guidance(tmp_path):
    prior = CodePrior(_layout(cond_dropout=0.0), {"channels": 8, "layers": 2, "kernel_size": 3})
    save_prior(prior, tmp_path / "new.safetensors", {"fingerprint": "abc"})
    with safe_open(tmp_path / "new.safetensors", "pt") as f:  # rewrite as the format was before guidance
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    config, layout = json.loads(meta["config"]), json.loads(meta["layout"])
    del config["null_class"], layout["cond_dropout"], layout["guidance"]
    meta.update(config=json.dumps(config), layout=json.dumps(layout))
    save_file(tensors, tmp_path / "old.safetensors", metadata=meta)
    old = load_prior(tmp_path / "old.safetensors")
    assert not old.layout.null_class and not old.net.config.null_class
    labels = torch.tensor([0, 1, 2])
    expected = prior.eval().sample(3, labels, generator=_seeded(2))
    assert torch.equal(old.sample(3, labels, generator=_seeded(2)), expected)
    assert torch.equal(sample_codes([old], 3, labels, generator=_seeded(2), guidance=1.0)[0], expected)
    with pytest.raises(VqtokError, match="model.cond_dropout > 0"):
        sample_codes([old], 3, labels, guidance=2.0)
    with pytest.raises(ValueError, match="null class"):
        old.sample(3, labels, guidance=2.0)


def test_unconditional_guided_prior_draws_the_class_then_guides():
    prior = CodePrior(_layout(guidance=3.0), {"channels": 8, "layers": 2, "kernel_size": 3})
    labels = torch.tensor([0, 2])
    by_default = sample_codes([prior], 2, labels, generator=_seeded(4))[0]  # the recipe's guidance
    assert torch.equal(by_default, sample_pixelcnn(prior.net, 2, (4, 4), labels, generator=_seeded(4), guidance=3.0))
    assert not torch.equal(by_default, sample_codes([prior], 2, labels, generator=_seeded(4), guidance=1.0)[0])


# ---------------------------------------------------------------- issue 9: one decode loop, batched bottom level
def _eos_prior() -> CodePrior:
    torch.manual_seed(0)
    lay = SequenceLayout(network="transformer", level="codes", level_index=0, codebook_size=12, eos=True,
                         num_classes=3, class_counts=[1, 1, 1], max_length=30, cond_dropout=0.2)
    prior = CodePrior(lay, {"dim": 16, "layers": 2, "heads": 2, "max_len": 40})
    with torch.no_grad():
        prior.net.head.bias[lay.vocab.eos] += 2.0  # sequences end after a few codes
    return prior.eval()


@pytest.mark.parametrize("guidance", [1.0, W])
def test_sequences_with_eos_come_from_the_one_decode_loop(guidance):
    """CodePrior.sample (KV cache) equals the decode loop's full-recompute path with EOS as its stop token."""
    prior = _eos_prior()
    vocab, labels = prior.layout.vocab, torch.tensor([0, 1, 2, 0, 1, 2, 0])
    sampled = prior.sample(7, labels, generator=_seeded(1), batch_size=3, guidance=guidance)
    ref = decode_transformer(prior.net, 7, 30, labels, generator=_seeded(1), use_cache=False, guidance=guidance,
                             batch_size=3, stop=vocab.eos, banned=(vocab.pad, vocab.bos))
    assert [s.tolist() for s in sampled] == [ref.codes[i, : int(m)].tolist() for i, m in enumerate(ref.lengths)]
    lengths = [len(s) for s in sampled]
    assert min(lengths) >= 1 and len(set(lengths)) > 1 and max(lengths) < 30  # natural, varied lengths
    assert all(int(s.max()) < 12 for s in sampled)  # codes only: no PAD, BOS or EOS inside


def test_one_dimensional_bottom_level_is_sampled_in_batches():
    """The 1-D bottom prior honours batch_size (one cache per batch, not per item) and, greedily, gives each
    item the codes it gets when sampled alone, whatever the other items' lengths."""
    torch.manual_seed(0)
    lay = SequenceLayout(network="transformer", level="bottom", level_index=1, codebook_size=12,
                         cond_codebook_size=6, cond_ratio=4)
    prior = CodePrior(lay, {"dim": 16, "layers": 2, "heads": 2, "max_len": 64}).eval()
    tops = [torch.randint(0, 6, (k,)) for k in (3, 5, 2, 5, 4)]
    caches = []
    original = prior.net.new_cache
    prior.net.new_cache = lambda *a, **k: caches.append(a[0]) or original(*a, **k)
    batched = prior.sample(5, None, tops, temperature=0.0, batch_size=2)
    assert caches == [2, 2, 1]  # three batches of at most two items
    del prior.net.new_cache
    assert [len(s) for s in batched] == [4 * len(t) for t in tops]
    for top, codes in zip(tops, batched):
        alone = sample_transformer(prior.net, 1, 4 * len(top), None, top[None], temperature=0.0)[0]
        assert torch.equal(codes, alone)


# ------------------------------------------------------------------------------ recipe, trainer and CLI
def test_recipe_keys_are_checked():
    from test_prior_train import REPO

    from vqtok.prior.recipe import load_prior_recipe

    path = REPO / "recipes" / "mnist_prior.yaml"
    recipe = load_prior_recipe(path, ["model.cond_dropout=0.1", "model.guidance=3"])
    assert recipe.model.cond_dropout == 0.1 and recipe.model.guidance == 3.0
    with pytest.raises(VqtokError, match="guidance 3.0 needs an unconditional model"):
        load_prior_recipe(path, ["model.cond_dropout=0", "model.guidance=3"])
    with pytest.raises(VqtokError, match="needs model.class_conditional: true"):
        load_prior_recipe(path, ["model.cond_dropout=0.1", "model.class_conditional=false"])
    with pytest.raises(VqtokError, match=r"cond_dropout must be in \[0, 1\)"):
        load_prior_recipe(path, ["model.cond_dropout=1.0"])
    with pytest.raises(VqtokError, match="null_class is set by the tokenizer and the data"):
        load_prior_recipe(path, ["model.config.null_class=true"])


def test_trained_prior_samples_with_the_recipes_guidance_and_cli_refuses_it_without_null_class(tmp_path):
    from click.testing import CliRunner
    from test_prior_train import prior_recipe, tiny_tokenizer

    from vqtok import read_codes
    from vqtok.cli import main
    from vqtok.prior.train import train_prior

    tok_path = tiny_tokenizer(tmp_path / "tok.safetensors")
    recipe = prior_recipe(tok_path, "model.cond_dropout=0.5", "model.guidance=2.0", "train.lr=0.05")
    torch.manual_seed(0)
    init = CodePrior(_layout(cond_dropout=0.5, shape=[7, 7], codebook_size=16, num_classes=10),
                     dict(recipe.model.config)).state_dict()["net.gated.0.class_bias.weight"]
    train_prior(recipe, tmp_path / "run", progress=False, plot=False)
    saved = load_prior(tmp_path / "run" / "prior.safetensors")
    assert saved.layout.cond_dropout == 0.5 and saved.layout.guidance == 2.0 and saved.net.config.null_class
    trained = saved.state_dict()["net.gated.0.class_bias.weight"]
    assert trained.shape == init.shape == (11, 16)
    assert not torch.equal(trained[10], init[10])  # the null class row was trained

    def sample(*extra):
        out = tmp_path / f"codes{len(list(tmp_path.glob('codes*')))}"
        result = CliRunner().invoke(main, ["sample", str(tmp_path / "run"), "-n", "4", "--label", "3", "-o",
                                           str(out / "s.png"), "--codes", str(out), *extra], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return [read_codes(out / f"sample_{i:03d}.npy").levels[0] for i in range(4)]

    default, two, one = sample(), sample("--guidance", "2"), sample("--guidance", "1")
    assert all(np.array_equal(a, b) for a, b in zip(default, two))  # the recipe's weight by default
    assert not all(np.array_equal(a, b) for a, b in zip(default, one))

    plain = prior_recipe(tok_path, "model.cond_dropout=0", "model.guidance=1")  # mnist_prior.yaml has guidance on
    train_prior(plain, tmp_path / "plain", progress=False, plot=False)
    result = CliRunner().invoke(main, ["sample", str(tmp_path / "plain"), "--guidance", "3", "-o",
                                       str(tmp_path / "x.png")])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    assert "model.cond_dropout > 0" in result.output and not (tmp_path / "x.png").exists()
