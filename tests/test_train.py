"""Trainer: recipes parse strictly, debug trains end to end, resume is exact, DDP ranks agree."""

import json
import os
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from testdata import SHARED_DATA
from vqtok import VqtokError, load_tokenizer
from vqtok.pretrained.export import recipe_model_config
from vqtok.run import load_recipe_dict
from vqtok.tokenizer.recipe import load_recipe
from vqtok.tokenizer import build_tokenizer, nets
from vqtok.run import StepBatches, lr_lambda
from vqtok.tokenizer.recipe import DataConfig
from vqtok.speech_level import level_db
from vqtok.data.build import build_tokenizer_data
from vqtok.tokenizer.train import train_tokenizer

REPO = Path(__file__).resolve().parents[1]
RECIPES = sorted((REPO / "recipes").glob("*.yaml"))
MNIST = str(SHARED_DATA / "mnist")


def debug_recipe(**overrides):
    items = [f"data.root={MNIST}"] + [f"{k}={v}" for k, v in overrides.items()]
    return load_recipe(REPO / "recipes" / "debug.yaml", items)


@pytest.mark.parametrize("path", RECIPES, ids=[p.name for p in RECIPES])
def test_every_recipe_parses_and_builds(path):
    text = path.read_text()
    assert text.startswith("#"), "every recipe opens with a comment block"
    data = load_recipe_dict(path)
    if data.get("task") == "latent_level":  # a level stacked on a shipped tokenizer: its own stages
        from vqtok.tokenizer.train_latent import load_latent_recipe

        recipe = load_latent_recipe(yaml.safe_load(text))
        assert recipe.stages and all(stage.train.max_steps > 0 for stage in recipe.stages)
        assert sum(p.numel() for p in build_tokenizer(recipe_model_config(path)).parameters()) > 0
    elif data.get("task", "tokenizer") == "tokenizer":
        recipe = load_recipe(path)
        model = build_tokenizer(recipe.model)
        assert sum(p.numel() for p in model.parameters()) > 0
        assert recipe.data.root and recipe.train.max_steps > 0
    else:
        from vqtok.prior.train import load_prior_recipe

        recipe = load_prior_recipe(path)
        assert recipe.train.max_steps > 0


def test_unknown_key_is_an_error_listing_valid_keys():
    with pytest.raises(VqtokError, match=r"debug.yaml: unknown key 'train.max_step'; valid keys under train: .*max_steps"):
        load_recipe(REPO / "recipes" / "debug.yaml", ["train.max_step=3"])
    with pytest.raises(VqtokError, match="expected an integer"):
        load_recipe(REPO / "recipes" / "debug.yaml", ["train.max_steps=many"])
    with pytest.raises(VqtokError, match="train.lr: expected a number, got 'fast'"):
        load_recipe(REPO / "recipes" / "debug.yaml", ["train.lr=fast"])


def test_exponent_numbers_without_a_dot_are_numbers():
    """PyYAML follows YAML 1.1, which reads 2e-4 (no dot) as a string: a float field takes it as 0.0002."""
    r = load_recipe(REPO / "recipes" / "debug.yaml", ["train.lr=2e-4", "train.weight_decay=1E2"])
    assert r.train.lr == 2e-4 and r.train.weight_decay == 100.0


def test_overrides_reach_nested_fields():
    r = debug_recipe(**{"train.max_steps": 7, "model.net.channels": "[4,8]", "train.lr": 0.5})
    assert r.train.max_steps == 7 and r.model.net.channels == [4, 8] and r.train.lr == 0.5


def test_audio_training_crops_take_the_recipe_level_and_random_gain(tone_folder):
    """data.gain_db reaches every audio training crop, concatenated or not (it once reached concat crops only), and
    data.level_db brings each file to its level first: training, and validation without the random gain."""
    kw = dict(kind="audio", root=str(tone_folder), rule="fsdd", segment_seconds=0.1, valid_items=3)
    plain_train, plain_valid = build_tokenizer_data(DataConfig(**kw), 8000)
    for concat in (False, True):
        train, _ = build_tokenizer_data(DataConfig(**kw, concat=concat, gain_db=6.0), 8000)
        torch.manual_seed(1)
        a = train[0]["x"]
        torch.manual_seed(1)
        b = (train.base if hasattr(train, "base") else train)[0]["x"]
        ratio = (a[b != 0] / b[b != 0])
        assert torch.allclose(ratio, ratio[0]) and abs(20 * torch.log10(ratio[0]).item()) > 0.01
    train, valid = build_tokenizer_data(DataConfig(**kw, level_db=-30.0), 8000)
    for i in range(len(train)):
        assert level_db(train.clip(i), 8000) == pytest.approx(-30.0, abs=1e-3)
        assert level_db(plain_train.clip(i), 8000) > -20  # the tones as stored are louder
    x, y = valid[0]["x"][0], plain_valid[0]["x"][0]  # whole clips: the plain one scaled, no random gain
    assert level_db(x.numpy(), 8000) == pytest.approx(-30.0, abs=1e-3)
    ratio = x[y.abs() > 1e-3] / y[y.abs() > 1e-3]
    assert torch.allclose(ratio, ratio[0], rtol=1e-5) and ratio[0] < 1


def test_lr_schedule_warmup_then_cosine():
    assert lr_lambda(0, 10, 100, 0.1) == pytest.approx(0.1)
    assert lr_lambda(9, 10, 100, 0.1) == pytest.approx(1.0)
    assert lr_lambda(55, 10, 100, 0.1) == pytest.approx(0.1 + 0.9 * 0.5)
    assert lr_lambda(100, 10, 100, 0.1) == pytest.approx(0.1)


def test_step_batches_are_a_function_of_the_step():
    full = list(StepBatches(50, 8, seed=3, start=0, stop=12))
    tail = list(StepBatches(50, 8, seed=3, start=7, stop=12))
    assert full[7:] == tail
    epoch0 = sum(full[:6], [])  # 6 batches of 8 per epoch of 50 items: no repeats inside an epoch
    assert len(set(epoch0)) == 48
    ranks = [list(StepBatches(50, 4, 3, 0, 3, rank=r, world=2)) for r in range(2)]
    for a, b in zip(*ranks):
        assert not set(a) & set(b)


def test_debug_recipe_trains_end_to_end(tmp_path):
    recipe = debug_recipe(**{"train.valid_every": 10})
    model = train_tokenizer(recipe, tmp_path / "run", progress=False)
    run = tmp_path / "run"
    tok = load_tokenizer(run / "tokenizer.safetensors")
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if r["split"] == "train"]
    valid_rows = [r for r in rows if r["split"] == "valid"]
    assert [r["step"] for r in train_rows] == [10, 20] and [r["step"] for r in valid_rows] == [10, 20]
    # the best validation MSE and its step, in the tokenizer's train info and in the training state
    top = min(valid_rows, key=lambda r: r["mse"])
    best = {"best_mse": top["mse"], "best_step": top["step"]}
    assert tok.train_info == {"recipe": "debug", "step": 20, **best}
    assert torch.load(run / "state.pt", weights_only=True)["best"] == best
    assert train_rows[-1]["mse"] < train_rows[0]["mse"]
    assert valid_rows and 0 < valid_rows[-1]["usage"] <= 1
    assert (run / "curves.png").stat().st_size > 0 and (run / "valid" / "step0000020.png").is_file()
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(tok.decode(tok.encode(x), (28, 28)), model.decode(model.encode(x), (28, 28)))


def test_resume_gives_the_same_final_weights(tmp_path):
    recipe = debug_recipe(**{"train.max_steps": 8, "train.valid_every": 100, "train.save_every": 100})
    straight = train_tokenizer(recipe, tmp_path / "a", progress=False)
    train_tokenizer(recipe, tmp_path / "b", stop_after=3, progress=False)
    assert load_tokenizer(tmp_path / "b" / "tokenizer.safetensors").train_info["step"] == 3
    resumed = train_tokenizer(load_recipe(tmp_path / "b" / "recipe.yaml"), tmp_path / "b", resume=True, progress=False)
    for name, value in straight.state_dict().items():
        assert torch.equal(resumed.state_dict()[name], value), name


def test_init_from_keeps_the_weights_and_applies_the_recipe_quantizer_settings(tmp_path):
    quick = {"train.max_steps": 2, "train.log_every": 2, "train.valid_every": 100, "train.save_every": 100}
    train_tokenizer(debug_recipe(**quick), tmp_path / "a", progress=False)
    start = tmp_path / "a" / "tokenizer.safetensors"

    def revived_in_two_steps(**settings):
        recipe = debug_recipe(**quick, **{"train.lr": 0.0, "train.warmup_steps": 0}, **settings)
        run = tmp_path / f"b{len(list(tmp_path.iterdir()))}"
        model = train_tokenizer(recipe, run, init_from=str(start), progress=False)
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        last = [r for r in rows if r["split"] == "train"][-1]
        return model, load_tokenizer(run / "tokenizer.safetensors"), last["revived"]

    # dead_ratio 100: every code's EMA count is below 100 x the average, so all 32 codes revive every step
    model, saved, revived = revived_in_two_steps(**{"model.quantizer.dead_ratio": 100})
    assert revived == 2 * 32
    assert model.quantizer.config.dead_ratio == 100 and saved.config.quantizer.dead_ratio == 100
    _, _, revived = revived_in_two_steps()  # the recipe's 0.1: a trained codebook has (almost) none dead
    assert revived < 2 * 32
    # the architecture and the weights (lr 0) are the start's
    for name, value in load_tokenizer(start).state_dict().items():
        if not name.startswith("quantizer."):
            assert torch.equal(saved.state_dict()[name], value), name


def test_init_from_takes_the_recipe_activation_and_keeps_every_weight(tmp_path):
    quick = {"train.max_steps": 2, "train.log_every": 2, "train.valid_every": 100, "train.save_every": 100}
    train_tokenizer(debug_recipe(**quick), tmp_path / "a", progress=False)  # the debug recipe's ELU
    start = load_tokenizer(tmp_path / "a" / "tokenizer.safetensors")
    assert start.config.activation == "elu"
    recipe = debug_recipe(**quick, **{"train.lr": 0.0, "train.warmup_steps": 0, "model.activation": "hard_elu"})
    train_tokenizer(recipe, tmp_path / "b", init_from=str(tmp_path / "a" / "tokenizer.safetensors"), progress=False)
    saved = load_tokenizer(tmp_path / "b" / "tokenizer.safetensors").eval()
    assert saved.config.activation == "hard_elu"
    kinds = {type(m).__name__ for m in saved.modules()}
    assert "HardELU" in kinds and "ELU" not in kinds
    for name, value in start.state_dict().items():  # lr 0: every weight is the start's
        if not name.startswith("quantizer."):
            assert torch.equal(saved.state_dict()[name], value), name
    # the same network with ELU's exp(x) - 1 below 0 become max(x, -1): equal once the start's ELUs are swapped
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        start.eval()
        assert not torch.equal(saved.encoder(x), start.encoder(x))
        for module in list(start.modules()):
            for n, child in module.named_children():
                if isinstance(child, torch.nn.ELU):
                    setattr(module, n, nets.HardELU())
        assert torch.equal(saved.encoder(x), start.encoder(x))
        assert torch.equal(saved.decoder(saved.encoder(x)), start.decoder(start.encoder(x)))


def test_a_run_started_from_another_architecture_records_it_and_resumes(tmp_path):
    quick = {"train.max_steps": 4, "train.log_every": 2, "train.valid_every": 100, "train.save_every": 100}
    train_tokenizer(debug_recipe(**quick), tmp_path / "a", progress=False)  # res_depth 1
    recipe = debug_recipe(**quick, **{"model.net.res_depth": 2})
    straight = train_tokenizer(recipe, tmp_path / "b", init_from=str(tmp_path / "a"), progress=False)
    assert load_recipe(tmp_path / "b" / "recipe.yaml").model.net.res_depth == 1  # the model's, not the file's
    recipe = debug_recipe(**quick, **{"model.net.res_depth": 2})
    train_tokenizer(recipe, tmp_path / "c", init_from=str(tmp_path / "a"), stop_after=2, progress=False)
    resumed = train_tokenizer(load_recipe(tmp_path / "c" / "recipe.yaml"), tmp_path / "c", resume=True,
                              progress=False)
    for name, value in straight.state_dict().items():
        assert torch.equal(resumed.state_dict()[name], value), name


def test_distillation_trains_only_a_lighter_encoder_toward_the_teacher(tmp_path, tone_folder):
    from vqtok.tokenizer.checkpoint import save_tokenizer
    from vqtok.tokenizer.distill import student_from

    audio = {"model.dims": 1, "model.sample_rate": 8000, "model.net.strides": "[4,5]", "model.net.res_depth": 2,
             "model.net.dilation_growth": 3, "model.activation": "hard_elu", "data.kind": "audio",
             "data.root": str(tone_folder), "data.rule": "fsdd", "data.segment_seconds": 0.25,
             "train.batch_size": 4, "loss.fft_sizes": "[64,128]"}
    teacher = train_tokenizer(debug_recipe(**audio, **{"train.max_steps": 2, "train.valid_every": 100}),
                              tmp_path / "teacher", progress=False)
    save_tokenizer(teacher, tmp_path / "teacher.safetensors")
    lighter = {"model.net.encoder_res_depth": 1, "model.net.encoder_stem": "patch",
               "loss.adversarial": "{periods: [2], fft_sizes: [64], channels: 2}"}  # a GAN recipe: not used
    recipe = debug_recipe(**audio, **lighter, **{"loss.teacher": str(tmp_path / "teacher.safetensors"),
                                                 "train.max_steps": 12, "train.lr": 3e-3, "train.log_every": 1,
                                                 "train.valid_every": 12})
    start = student_from(teacher, recipe.model)
    student = train_tokenizer(recipe, tmp_path / "run", progress=False)
    saved = load_tokenizer(tmp_path / "run" / "tokenizer.safetensors")
    assert saved.config.net.encoder_depth == 1 and saved.config.net.encoder_stem == "patch"
    assert len(saved.encoder.parts().stages[0].blocks) == 1 and len(saved.decoder.net) == len(teacher.decoder.net)
    for name, value in teacher.state_dict().items():  # decoder and codebook: the teacher's, untouched
        if not name.startswith("encoder."):
            assert torch.equal(saved.state_dict()[name], value), name
    moved = [n for n, v in start.encoder.state_dict().items() if not torch.equal(student.encoder.state_dict()[n], v)]
    assert len(moved) == len(start.encoder.state_dict())
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["split"] == "train"]
    assert len(train) == 12 and all(0 <= r["agree"] <= 1 for r in train)
    assert np.mean([r["loss"] for r in train[-3:]]) < np.mean([r["loss"] for r in train[:3]])
    assert "mel_distance" in [r for r in rows if r["split"] == "valid"][-1]
    assert all("adv" not in r for r in train)  # no discriminators built, trained or saved
    assert not [k for k in torch.load(tmp_path / "run" / "state.pt", weights_only=True) if k.endswith("_disc")]
    # interrupted and resumed: the teacher comes back from the run's recipe, the weights end the same
    train_tokenizer(recipe, tmp_path / "cut", stop_after=5, progress=False)
    resumed = train_tokenizer(load_recipe(tmp_path / "cut" / "recipe.yaml"), tmp_path / "cut", resume=True,
                              progress=False)
    for name, value in student.state_dict().items():
        assert torch.equal(resumed.state_dict()[name], value), name
    with pytest.raises(VqtokError, match="drop --init-from"):
        train_tokenizer(recipe, tmp_path / "other", init_from=str(tmp_path / "teacher.safetensors"), progress=False)


def tones_8k(folder: Path) -> dict:
    """Overrides for a small 8 kHz audio model trained on the tone folder (the decoder-only tests)."""
    return {"model.dims": 1, "model.sample_rate": 8000, "model.net.strides": "[4,5]", "model.net.res_depth": 1,
            "data.kind": "audio", "data.root": str(folder), "data.rule": "fsdd", "data.segment_seconds": 0.25,
            "train.batch_size": 4, "loss.fft_sizes": "[64,128]", "train.valid_every": 100}


def test_decoder_only_training_keeps_every_code_and_trains_only_the_decoder(tmp_path, tone_folder):
    audio = tones_8k(tone_folder)
    start = train_tokenizer(debug_recipe(**audio, **{"train.max_steps": 2}), tmp_path / "start", progress=False)
    recipe = debug_recipe(**audio, **{"loss.decoder_only": True, "train.max_steps": 8, "train.lr": 3e-3,
                                      "train.log_every": 1, "model.quantizer.dead_ratio": 0.9})
    tuned = train_tokenizer(recipe, tmp_path / "run", init_from=str(tmp_path / "start"), progress=False)
    saved = load_tokenizer(tmp_path / "run" / "tokenizer.safetensors")
    assert saved.codes_fingerprint == load_tokenizer(tmp_path / "start").codes_fingerprint  # its token files too
    before, after = start.state_dict(), saved.state_dict()
    frozen = [n for n in before if not n.startswith("decoder.")]
    assert any(n.startswith("quantizer.") for n in frozen)  # codebook, EMA sums and counters among them
    for name in frozen:
        assert torch.equal(after[name], before[name]), name
    moved = [n for n in before if n.startswith("decoder.") and not torch.equal(after[n], before[n])]
    assert len(moved) == len([n for n, _ in start.decoder.named_parameters()])
    x = torch.from_numpy(sf.read(sorted(tone_folder.glob("*.wav"))[0], dtype="float32")[0])
    with torch.no_grad():
        assert torch.equal(saved.encode(x), start.encode(x))
        assert not torch.equal(saved.decode(saved.encode(x)), start.decode(start.encode(x)))
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["split"] == "train"]
    assert len(train) == 8 and all(r["commit"] == 0 and "revived" not in r for r in train)
    # interrupted and resumed: the same decoder at the end, the encoder still the start's
    train_tokenizer(recipe, tmp_path / "cut", init_from=str(tmp_path / "start"), stop_after=3, progress=False)
    resumed = train_tokenizer(load_recipe(tmp_path / "cut" / "recipe.yaml"), tmp_path / "cut", resume=True,
                              progress=False)
    for name, value in tuned.state_dict().items():
        assert torch.equal(resumed.state_dict()[name], value), name
    with pytest.raises(VqtokError, match="start with --init-from"):
        train_tokenizer(recipe, tmp_path / "scratch", progress=False)


def test_a_decoder_only_stage_can_deepen_the_decoder_and_keeps_the_codes(tmp_path, tone_folder, capsys):
    audio = {**tones_8k(tone_folder), "model.net.dilation_growth": 3}
    start = train_tokenizer(debug_recipe(**audio, **{"train.max_steps": 2}), tmp_path / "start", progress=False)
    deeper = {**audio, "loss.decoder_only": True, "train.max_steps": 4, "train.lr": 3e-3,
              "model.net.decoder_res_depth": 3}
    tuned = train_tokenizer(debug_recipe(**deeper), tmp_path / "run", init_from=str(tmp_path / "start"),
                            progress=False)
    saved = load_tokenizer(tmp_path / "run")
    assert saved.config.net.decoder_res_depth == 3 and saved.config.net.encoder_depth == 1
    assert sum(isinstance(m, nets.ResBlock) for m in saved.decoder.modules()) == 6
    assert saved.fingerprint != start.fingerprint and saved.codes_fingerprint == start.codes_fingerprint
    for name, value in start.state_dict().items():
        if not name.startswith("decoder."):
            assert torch.equal(saved.state_dict()[name], value), name
    assert "decoder 1 -> 3 residual blocks a stage" in "".join(capsys.readouterr())
    # resumed from its own recipe.yaml, which records the deeper decoder: the same weights at the end
    train_tokenizer(debug_recipe(**deeper), tmp_path / "cut", init_from=str(tmp_path / "start"), stop_after=2,
                    progress=False)
    resumed = train_tokenizer(load_recipe(tmp_path / "cut" / "recipe.yaml"), tmp_path / "cut", resume=True,
                              progress=False)
    for name, value in tuned.state_dict().items():
        assert torch.equal(resumed.state_dict()[name], value), name
    with pytest.raises(VqtokError, match="can only be deepened"):
        train_tokenizer(debug_recipe(**{**deeper, "model.net.decoder_res_depth": 2}), tmp_path / "shallower",
                        init_from=str(tmp_path / "run"), progress=False)


def test_decoder_only_path_of_a_vqvae2_reproduces_decode_and_trains_its_decoder_modules():
    from vqtok.tokenizer.train import DecoderTraining

    torch.manual_seed(0)
    model = build_tokenizer(debug_recipe(**{"model.arch": "vqvae2", "model.top": "{channels: [16], strides: [2]}"}
                                         ).model).eval()
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        expected = model.decode(model.encode(x), size=(28, 28))
    out = DecoderTraining(model)(x)
    assert torch.allclose(out.recon, expected, atol=1e-6)
    out.recon.square().mean().backward()
    trained = {n for n, p in model.named_parameters() if p.grad is not None}
    decoding = {f"{prefix}.{n}" for prefix in ("up_t", "decoder") for n, _ in getattr(model, prefix).named_parameters()}
    assert trained == decoding and all(not p.requires_grad for n, p in model.named_parameters() if n not in trained)


def test_audio_training_path_with_masks(tmp_path):
    root = tmp_path / "audio"
    root.mkdir()
    rng = np.random.default_rng(0)
    for digit in range(3):
        for take in (0, 7, 8):  # take 0 -> test split, 7/8 -> train (fsdd rule)
            n = int(rng.integers(600, 3000))
            t = np.arange(n) / 8000
            wav = 0.3 * np.sin(2 * np.pi * (200 + 100 * digit) * t) * np.hanning(n)
            sf.write(root / f"{digit}_spk_{take}.wav", wav.astype(np.float32), 8000)
    recipe = debug_recipe(**{
        "model.dims": 1, "model.sample_rate": 8000, "model.net.strides": "[4,5]", "model.net.dilation_growth": 3,
        "data.kind": "audio", "data.root": str(root), "data.rule": "fsdd", "data.segment_seconds": 0.25,
        "train.max_steps": 4, "train.batch_size": 4, "train.log_every": 2, "train.valid_every": 4,
        "loss.fft_sizes": "[64,128]",
    })
    train_tokenizer(recipe, tmp_path / "run", progress=False)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    valid = [r for r in rows if r["split"] == "valid"][-1]
    assert {"l1", "stft", "si_snr", "mel_distance", "usage"} <= set(valid)
    assert len(list((tmp_path / "run" / "valid").glob("*.wav"))) == 3
    pictures = list((tmp_path / "run" / "valid").glob("*.png"))  # spectrograms of input | reconstruction
    assert len(pictures) == 1 and pictures[0].stat().st_size > 1000


# ------------------------------------------------------------------------ DDP
def _ddp_worker(rank: int, port: int, tmp: str, init_from: str | None = None) -> None:
    try:
        os.environ.update(WORLD_SIZE="2", RANK=str(rank), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                          MASTER_PORT=str(port))
        torch.set_num_threads(1)
        recipe = debug_recipe(**{"train.device": "cpu", "train.max_steps": 3, "train.batch_size": 8,
                                 "train.valid_every": 100, "train.save_every": 100, "train.log_every": 1,
                                 "loss.decoder_only": bool(init_from)})
        model = train_tokenizer(recipe, Path(tmp) / "run", init_from=init_from, progress=False)
        torch.save({k: v.clone() for k, v in model.state_dict().items()}, Path(tmp) / f"rank{rank}.pt")
    except BaseException:
        traceback.print_exc()
        raise


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_cpu_ranks_hold_the_same_codebook_and_weights(tmp_path, spawn_ranks):
    port = _free_port()
    spawn_ranks(_ddp_worker, [(r, port, str(tmp_path)) for r in range(2)], timeout=600)
    a, b = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2))
    for name in a:
        assert torch.equal(a[name], b[name]), name
    assert bool(a["quantizer.initted"])
    # Only rank 0 wrote the run folder.
    assert (tmp_path / "run" / "tokenizer.safetensors").is_file()
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["split"]) for r in rows] == [(1, "train"), (2, "train"), (3, "train"), (3, "valid")]


def test_ddp_decoder_only_ranks_agree_and_keep_the_encoder_and_codebook(tmp_path, spawn_ranks):
    start = train_tokenizer(debug_recipe(**{"train.max_steps": 2, "train.batch_size": 8}), tmp_path / "start",
                            progress=False)
    port = _free_port()
    spawn_ranks(_ddp_worker, [(r, port, str(tmp_path), str(tmp_path / "start")) for r in range(2)], timeout=600)
    a, b = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2))
    before = start.state_dict()
    for name in a:
        assert torch.equal(a[name], b[name]), name
        assert torch.equal(a[name], before[name]) != name.startswith("decoder."), name  # only the decoder moved
    saved = load_tokenizer(tmp_path / "run" / "tokenizer.safetensors")
    assert saved.codes_fingerprint == load_tokenizer(tmp_path / "start").codes_fingerprint


def test_sigterm_to_the_process_group_saves_despite_dying_loader_workers(tmp_path, tone_folder):
    """`timeout` and cluster pre-emption signal the whole group: the loader's workers die with the trainer.

    The trainer must still save the step it reached (before the fix, the workers' deaths raised in the save).
    """
    run = tmp_path / "run"
    args = [f"{k}={v}" for k, v in {
        "model.dims": 1, "model.sample_rate": 8000, "model.net.strides": "[4,5]", "data.kind": "audio",
        "data.root": str(tone_folder), "data.rule": "fsdd", "data.segment_seconds": 0.25, "data.num_workers": 1,
        "train.max_steps": 100000, "train.batch_size": 4, "train.log_every": 1, "train.valid_every": 100000,
        "train.save_every": 100000, "loss.fft_sizes": "[64,128]"}.items()]
    proc = subprocess.Popen([sys.executable, "-m", "vqtok", "train", str(REPO / "recipes" / "debug.yaml"), "--out",
                             str(run), "--quiet", *args], start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    metrics = run / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if metrics.is_file() and len(metrics.read_text().splitlines()) >= 3:
            break
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGTERM)
    output, _ = proc.communicate(timeout=120)
    assert "interrupted at step" in output, output
    assert "is killed by signal" not in output, output
    saved = load_tokenizer(run / "tokenizer.safetensors").train_info["step"]
    logged = max(json.loads(line)["step"] for line in metrics.read_text().splitlines())
    assert saved >= logged >= 3
    assert torch.load(run / "state.pt", weights_only=True)["step"] == saved
