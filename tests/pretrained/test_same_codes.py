"""A decoder-only update of a shipped tokenizer keeps its token files decodable: codes fingerprint, same_codes_as."""

import dataclasses
import json
import shutil

import pytest
import torch
from click.testing import CliRunner

import vqtok.registry as registry
from vqtok import VqtokError
from vqtok.cli import main as main_cli
from vqtok.data.tokens import TokenDataset
from vqtok.pretrained.export import export_tokenizer, main
from vqtok.prior.checkpoint import load_prior
from vqtok.tokenizer import load_tokenizer, save_tokenizer
from vqtok.tokenizer.codes import read_codes, sidecar_path, write_codes
from standins import REPO, _card

CARD = _card(REPO / "recipes" / "debug.yaml")  # the mnist stand-in's recipe


@pytest.fixture
def models(standin_dir, tmp_path, monkeypatch):
    """A writable copy of the stand-in models folder, as the registry's."""
    folder = tmp_path / "models"
    shutil.copytree(standin_dir, folder)
    monkeypatch.setattr(registry, "MODELS_DIR", folder)
    return folder


def moved_run(source, tmp_path, name: str, part: str, seed: int = 1):
    """A copy of the run `source` whose `part` (decoder | encoder) weights moved: what training would leave."""
    tok = load_tokenizer(source)
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in getattr(tok, part).parameters():
            p.add_(0.05 * torch.randn_like(p))
    run = tmp_path / name
    run.mkdir()
    save_tokenizer(tok, run / "tokenizer.safetensors", train_info={"recipe": "debug", "step": seed + 1})
    shutil.copy(source / "recipe.yaml", run)
    return run


def export(run, models):
    export_tokenizer(run, "mnist", CARD, models, "auto", 16, lambda line: None)
    return registry.get("mnist")


def codes_file(tmp_path, name: str, legacy: bool):
    """Codes of an image by the shipped mnist; `legacy`: a sidecar as written before codes fingerprints."""
    tok = load_tokenizer("mnist")
    path = tmp_path / f"{name}.npy"
    with torch.no_grad():
        write_codes(path, tok.encode(torch.rand(1, 1, 28, 28))[0], tok, {"kind": "image", "size": [28, 28]})
    if legacy:
        side = sidecar_path(path)
        meta = json.loads(side.read_text())
        assert meta["tokenizer"].pop("codes_fingerprint") == tok.codes_fingerprint
        side.write_text(json.dumps(meta))
    return path, tok


def test_codes_fingerprint_follows_the_encoder_and_codebook_not_the_decoder(work, tmp_path):
    start = load_tokenizer(work / "mnist")
    decoder = load_tokenizer(moved_run(work / "mnist", tmp_path, "decoder", "decoder"))
    encoder = load_tokenizer(moved_run(work / "mnist", tmp_path, "encoder", "encoder"))
    assert decoder.fingerprint != start.fingerprint and decoder.codes_fingerprint == start.codes_fingerprint
    assert encoder.codes_fingerprint != start.codes_fingerprint
    # as stored in fp16 (a shipped file) and as loaded back: the codes fingerprint is of the loaded weights
    shipped = load_tokenizer(tmp_path / "decoder" / "tokenizer.safetensors")
    half = {n for n, t in shipped.state_dict().items() if t.is_floating_point()}
    save_tokenizer(shipped, tmp_path / "half.safetensors", half=frozenset(half))
    again = load_tokenizer(tmp_path / "half.safetensors")
    assert again.codes_fingerprint == shipped.codes_fingerprint != decoder.codes_fingerprint


def test_decoder_update_takes_over_the_token_files_of_earlier_versions(models, work, tmp_path):
    legacy, first = codes_file(tmp_path, "legacy", legacy=True)
    current, _ = codes_file(tmp_path, "current", legacy=False)
    second = export(moved_run(work / "mnist", tmp_path, "stage2", "decoder"), models)
    assert second.same_codes_as == (first.fingerprint,) and second.codes_fingerprint == first.codes_fingerprint
    third = export(moved_run(tmp_path / "stage2", tmp_path, "stage3", "decoder", seed=2), models)
    assert third.same_codes_as == (second.fingerprint, first.fingerprint)
    for path in (legacy, current):  # found without being told, and accepted when told
        tok = read_codes(path).load_tokenizer()
        assert tok.fingerprint == third.fingerprint
        assert read_codes(path, "mnist").levels[0].shape == (7, 7)
    res = CliRunner().invoke(main_cli, ["decode", str(legacy)], catch_exceptions=False)  # vqtok decode, no -m
    assert res.exit_code == 0 and (tmp_path / "legacy.decoded.png").is_file(), res.output
    assert (f"decoding with mnist (tokenizer {third.fingerprint}, a later version of the sidecar's "
            f"{first.fingerprint}, with the same codes)") in res.output
    exported_again = export(tmp_path / "stage3", models)  # the same weights once more: the list stays
    assert exported_again.fingerprint == third.fingerprint and exported_again.same_codes_as == third.same_codes_as


def test_the_same_weights_with_another_setting_take_over_the_token_files(models, work, tmp_path):
    """A re-export whose weights are unchanged but whose config is not (a training setting, or a speech model's
    level_db) has a new fingerprint and the same codes: the earlier fingerprint is listed."""
    first = registry.get("mnist")
    tok = load_tokenizer(work / "mnist")
    tok.config = dataclasses.replace(tok.config, quantizer=dataclasses.replace(tok.config.quantizer, decay=0.9))
    run = tmp_path / "resetting"
    run.mkdir()
    save_tokenizer(tok, run / "tokenizer.safetensors", train_info={"recipe": "debug", "step": 1})
    shutil.copy(work / "mnist" / "recipe.yaml", run)
    second = export(run, models)
    assert second.fingerprint != first.fingerprint and second.codes_fingerprint == first.codes_fingerprint
    assert second.same_codes_as == (first.fingerprint,)


def test_new_codes_do_not_take_over_and_a_token_file_is_refused(models, work, tmp_path):
    legacy, first = codes_file(tmp_path, "legacy", legacy=True)
    current, _ = codes_file(tmp_path, "current", legacy=False)
    replaced = export(moved_run(work / "mnist", tmp_path, "retrained", "encoder"), models)
    assert replaced.same_codes_as == () and replaced.codes_fingerprint != first.codes_fingerprint
    for path in (legacy, current):  # the sidecar names mnist: the message says it is another version of it
        with pytest.raises(VqtokError) as refused:
            read_codes(path).load_tokenizer()
        assert str(refused.value) == (
            f"{path}: made by another version of mnist (tokenizer {first.fingerprint}), with other codes than "
            f"this vqtok's mnist (tokenizer {replaced.fingerprint}); pass -m with the file that made it (the "
            "vqtok release that encoded it ships it)")
        res = CliRunner().invoke(main_cli, ["decode", str(path)])
        assert res.exit_code == 2 and res.output.strip() == f"error: {refused.value}", res.output
        with pytest.raises(VqtokError, match="pass the tokenizer that encoded it"):
            read_codes(path, "mnist")


def test_a_decoder_tuned_copy_and_the_shipped_model_read_each_others_codes(models, tmp_path):
    tok = load_tokenizer("mnist")
    with torch.no_grad():
        for p in tok.decoder.parameters():
            p.mul_(1.1)
    tuned_file = tmp_path / "tuned.safetensors"
    save_tokenizer(tok, tuned_file)
    tuned = load_tokenizer(tuned_file)
    assert tuned.fingerprint != registry.get("mnist").fingerprint
    assert tuned.codes_fingerprint == registry.get("mnist").codes_fingerprint
    path = tmp_path / "image.npy"
    with torch.no_grad():
        write_codes(path, tuned.encode(torch.rand(1, 1, 28, 28))[0], tuned, {"kind": "image", "size": [28, 28]})
    assert read_codes(path, "mnist").levels[0].shape == (7, 7)  # accepted by its codes fingerprint
    tuned_file.unlink()  # gone from its recorded path: the shipped model with its codes decodes it
    assert read_codes(path).load_tokenizer().fingerprint == registry.get("mnist").fingerprint
    load_prior(models / "mnist-prior.safetensors", tokenizer=tuned)  # a prior of the codes takes it too
    tok.quantizer.codebook.mul_(1.1)  # other codes: refused
    save_tokenizer(tok, tmp_path / "other.safetensors")
    with pytest.raises(VqtokError, match="this prior models the codes of"):
        load_prior(models / "mnist-prior.safetensors", tokenizer=load_tokenizer(tmp_path / "other.safetensors"))


def test_an_earlier_version_given_by_hand_is_checked_and_listed(models, work, tmp_path, capsys):
    kept = shutil.copy(models / "mnist.safetensors", tmp_path / "old-mnist.safetensors")  # as from git history
    first = load_tokenizer(kept)
    card = tmp_path / "card.yaml"
    card.write_text(f"description: x\nrecipe: {REPO / 'recipes' / 'debug.yaml'}\n"
                    "training_data: [{name: d, licence: CC0}]\n")
    fresh = tmp_path / "fresh"  # no file to replace: only the one given by hand
    decoder = moved_run(work / "mnist", tmp_path, "decoder", "decoder")
    args = [str(decoder), "mnist", "--card", str(card), "--out", str(fresh), "--items", "16"]
    assert main([*args, "--same-codes-as", str(kept)]) == 0
    assert registry.header(fresh / "mnist.safetensors")["same_codes_as"] == json.dumps([first.fingerprint])
    encoder = moved_run(work / "mnist", tmp_path, "encoder", "encoder")
    args[0] = str(encoder)
    capsys.readouterr()
    assert main([*args, "--force", "--same-codes-as", str(kept)]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1] == (f"error: {kept}: makes other codes than the exported model (its "
                                            "encoder or codebook differ), so its token files cannot be taken over")
    assert "measuring" not in err  # refused before the minutes of measuring
    assert load_tokenizer(fresh / "mnist.safetensors").fingerprint != load_tokenizer(encoder).fingerprint  # kept


def test_a_token_dataset_may_mix_versions_with_the_same_codes(models, work, tmp_path):
    legacy, first = codes_file(tmp_path, "legacy", legacy=True)  # by the first version, an old sidecar
    export(moved_run(work / "mnist", tmp_path, "stage2", "decoder"), models)
    newer, second = codes_file(tmp_path, "newer", legacy=True)  # by the second version, an old sidecar too
    assert second.fingerprint != first.fingerprint
    (tmp_path / "manifest.jsonl").write_text('{"codes": "legacy.npy"}\n{"codes": "newer.npy"}\n')
    tokens = TokenDataset(tmp_path / "manifest.jsonl", rule=None)
    assert len(tokens) == 2 and tokens.load_tokenizer().fingerprint == second.fingerprint
    export(moved_run(work / "mnist", tmp_path, "retrained", "encoder"), models)  # other codes: one tokenizer each
    with pytest.raises(VqtokError, match="one dataset, one tokenizer"):
        TokenDataset(tmp_path / "manifest.jsonl", rule=None)
