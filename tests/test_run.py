"""run.py: named optimizers and schedules (a second model, as a GAN discriminator) save and restore together."""

import torch

from vqtok.run import TrainConfig, Trainables, load_state, save_state


def two_parts(seed: int) -> tuple[Trainables, torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(seed)
    gen, disc = torch.nn.Linear(3, 2), torch.nn.Linear(2, 1)
    parts = Trainables()
    parts.add("main", gen.parameters(), TrainConfig(lr=1e-2, warmup_steps=2, max_steps=10))
    parts.add("disc", disc.parameters(), TrainConfig(lr=5e-3, warmup_steps=1, max_steps=10), keep_weights=disc)
    return parts, gen, disc


def train_steps(parts: Trainables, gen, disc, steps: range) -> None:
    for s in steps:
        x = torch.randn(4, 3, generator=torch.Generator().manual_seed(s))
        parts.parts["disc"].step(disc(gen(x).detach()).pow(2).mean())
        parts.parts["main"].step((1 - disc(gen(x))).pow(2).mean())


def test_two_optimizers_resume_exactly_from_the_state_file(tmp_path):
    straight, gen_a, disc_a = two_parts(0)
    train_steps(straight, gen_a, disc_a, range(6))

    first, gen_b, disc_b = two_parts(0)
    train_steps(first, gen_b, disc_b, range(3))
    save_state(tmp_path, 3, first, best={})
    state = load_state(tmp_path)
    assert {"optimizer", "scheduler", "optimizer_disc", "scheduler_disc", "weights_disc"} <= set(state)
    resumed, gen_c, disc_c = two_parts(1)  # other initial weights: everything must come from the state
    gen_c.load_state_dict(gen_b.state_dict())  # the main model's weights live in its own file
    resumed.load_state_dict(state)
    assert torch.equal(disc_c.weight, disc_b.weight)
    assert resumed.parts["disc"].lr == first.parts["disc"].lr != resumed.parts["main"].lr
    train_steps(resumed, gen_c, disc_c, range(3, 6))
    for a, c in ((gen_a, gen_c), (disc_a, disc_c)):
        for name, value in a.state_dict().items():
            assert torch.equal(c.state_dict()[name], value), name
