"""Discriminators and GAN losses: hand-computed hinge and feature terms, folding, and a resumable GAN run."""

import json
from pathlib import Path

import pytest
import torch

from testdata import SHARED_DATA
from vqtok.tokenizer.checkpoint import load_tokenizer
from vqtok.tokenizer.discriminators import (AdversarialConfig, Discriminators, Judgement, PeriodDiscriminator,
                                            STFTDiscriminator, discriminator_loss, feature_matching,
                                            generator_loss)
from vqtok.tokenizer.recipe import load_recipe
from vqtok.tokenizer.train import train_tokenizer

REPO = Path(__file__).resolve().parents[2]


def test_hinge_losses_by_hand():
    real = Judgement([torch.tensor([2.0, 0.5]), torch.tensor([[-1.0]])], [[], []])
    fake = Judgement([torch.tensor([-2.0, 0.0]), torch.tensor([[0.5]])], [[], []])
    # D: member 0: relu(1-2)=0, relu(1-0.5)=0.5 -> 0.25; relu(1-2)=0, relu(1+0)=1 -> 0.5: 0.75.
    #    member 1: relu(1+1)=2; relu(1+0.5)=1.5: 3.5.  Mean over members: 2.125.
    assert discriminator_loss(real, fake).item() == pytest.approx(2.125)
    # G: member 0: relu(1+2)=3, relu(1-0)=1 -> 2; member 1: relu(1-0.5) = 0.5. Mean 1.25.
    assert generator_loss(fake).item() == pytest.approx(1.25)


def test_feature_matching_is_relative_l1_and_moves_only_the_generator():
    r1, r2 = torch.tensor([1.0, -3.0]), torch.tensor([[2.0]])
    f1 = torch.tensor([2.0, -3.0], requires_grad=True)
    f2 = torch.tensor([[2.0]], requires_grad=True)
    real, fake = Judgement([], [[r1.requires_grad_()], [r2]]), Judgement([], [[f1], [f2]])
    # layer 1: mean |r - f| = 0.5, mean |r| = 2 -> 0.25; layer 2: 0.  Mean over layers: 0.125.
    loss = feature_matching(real, fake)
    assert loss.item() == pytest.approx(0.125)
    loss.backward()
    assert r1.grad is None and f1.grad is not None
    same = Judgement([], [[r1.detach()], [r2]])
    assert feature_matching(same, same).item() == 0.0


def test_period_discriminator_folds_by_its_period():
    d = PeriodDiscriminator(3, channels=2)
    x = torch.randn(2, 1, 100)  # padded to 102 = 34 x 3
    scores, features = d(x)
    assert scores.shape[-1] == 3 and features[0].shape[-2:] == (12, 3)  # 34 -> ceil(34 / 3) = 12 after stride 3
    # Samples in different phase columns never mix: changing column 0 leaves columns 1 and 2 unchanged.
    y = x.clone()
    y[..., 0::3] += 1.0
    s2, _ = d(y)
    assert torch.equal(s2[..., 1:], scores[..., 1:]) and not torch.equal(s2[..., 0], scores[..., 0])


def test_stft_discriminator_and_halves():
    cfg = AdversarialConfig(periods=[2], fft_sizes=[64], channels=2)
    disc = Discriminators(cfg)
    assert isinstance(disc.members[1], STFTDiscriminator)
    a, b = torch.randn(3, 1, 512), torch.randn(2, 1, 512)
    together = disc(torch.cat([a, b]))
    first, second = together.halves(3)
    alone = disc(b)
    for s_joint, s_alone in zip(second.scores, alone.scores):
        torch.testing.assert_close(s_joint, s_alone, rtol=1e-5, atol=1e-5)
    assert first.scores[0].shape[0] == 3 and len(first.features) == 2


def _audio_recipe(root: Path, **extra):
    items = {
        "model.dims": 1, "model.sample_rate": 8000, "model.net.strides": "[4,5]", "model.net.dilation_growth": 3,
        "data.kind": "audio", "data.root": str(root), "data.rule": "fsdd", "data.segment_seconds": 0.25,
        "train.max_steps": 6, "train.batch_size": 4, "train.log_every": 2, "train.valid_every": 100,
        "train.save_every": 100, "loss.fft_sizes": "[64,128]",
        "loss.adversarial": "{periods: [2, 3], fft_sizes: [64, 128], channels: 4, start_step: 2, lr: 5.0e-4}",
        **extra,
    }
    return load_recipe(REPO / "recipes" / "debug.yaml", [f"{k}={v}" for k, v in items.items()])


def _train_rows(run: Path) -> list[dict]:
    """The training rows of a run's metrics log."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r["split"] == "train"]


def test_gan_training_logs_its_terms_and_resumes_exactly(tmp_path, tone_folder):
    recipe = _audio_recipe(tone_folder)
    straight = train_tokenizer(recipe, tmp_path / "a", progress=False)
    train_rows = _train_rows(tmp_path / "a")
    assert "disc" not in train_rows[0]  # step 2: still the reconstruction-only warm-up (start_step 2)
    assert {"disc", "adv", "feat"} <= set(train_rows[-1]) and train_rows[-1]["disc"] > 0
    state = torch.load(tmp_path / "a" / "state.pt", weights_only=True)
    assert "optimizer_disc" in state and "weights_disc" in state
    assert state["optimizer_disc"]["param_groups"][0]["initial_lr"] == 5.0e-4

    train_tokenizer(recipe, tmp_path / "b", stop_after=4, progress=False)
    resumed = train_tokenizer(load_recipe(tmp_path / "b" / "recipe.yaml"), tmp_path / "b", resume=True,
                              progress=False)
    for name, value in straight.state_dict().items():
        assert torch.equal(resumed.state_dict()[name], value), name
    disc_a = torch.load(tmp_path / "a" / "state.pt", weights_only=True)["weights_disc"]
    disc_b = torch.load(tmp_path / "b" / "state.pt", weights_only=True)["weights_disc"]
    for name, value in disc_a.items():
        assert torch.equal(disc_b[name], value), name
    # The discriminators moved the generator: same seed without them gives other weights.
    plain = train_tokenizer(_audio_recipe(tone_folder, **{"loss.adversarial": "null"}), tmp_path / "c",
                            progress=False)
    assert any(not torch.equal(value, straight.state_dict()[name]) for name, value in plain.state_dict().items())
    assert load_tokenizer(tmp_path / "a" / "tokenizer.safetensors").config == straight.config


def test_disc_warmup_trains_the_discriminators_alone_first(tmp_path, tone_folder):
    gan = "{periods: [2, 3], fft_sizes: [64, 128], channels: 4, start_step: 0, disc_warmup: 4}"
    warm = train_tokenizer(_audio_recipe(tone_folder, **{"loss.adversarial": gan}), tmp_path / "warm",
                           stop_after=4, progress=False)
    train_rows = _train_rows(tmp_path / "warm")
    assert [r["step"] for r in train_rows] == [2, 4]
    assert all(r["disc"] > 0 and "adv" not in r for r in train_rows)  # the discriminators train, alone
    disc = torch.load(tmp_path / "warm" / "state.pt", weights_only=True)["weights_disc"]
    fresh = Discriminators(AdversarialConfig(periods=[2, 3], fft_sizes=[64, 128], channels=4)).state_dict()
    assert any(not torch.equal(disc[name], value) for name, value in fresh.items())
    # Their terms have not reached the generator: it is exactly the model trained with them weighted 0 (the same
    # discriminators drawn from the same random stream).
    unweighted = "{periods: [2, 3], fft_sizes: [64, 128], channels: 4, weight: 0.0, feature_weight: 0.0}"
    plain = train_tokenizer(_audio_recipe(tone_folder, **{"loss.adversarial": unweighted}), tmp_path / "plain",
                            stop_after=4, progress=False)
    for name, value in plain.state_dict().items():
        assert torch.equal(warm.state_dict()[name], value), name
    # After the warm-up they do.
    train_tokenizer(load_recipe(tmp_path / "warm" / "recipe.yaml"), tmp_path / "warm", resume=True, progress=False)
    assert {"disc", "adv", "feat"} <= set(_train_rows(tmp_path / "warm")[-1])


def test_gan_on_images_is_refused(tmp_path):
    from vqtok.errors import VqtokError

    recipe = load_recipe(REPO / "recipes" / "debug.yaml", [f"data.root={SHARED_DATA / 'mnist'}",
                                                           "loss.adversarial={channels: 2}", "train.max_steps=1"])
    with pytest.raises(VqtokError, match="audio"):
        train_tokenizer(recipe, tmp_path / "run", progress=False)

