"""`vqtok decode`, `vqtok info`, `vqtok eval`, and --help with an example on every command."""

import json

import numpy as np
import pytest
import soundfile as sf
import torch
from clihelpers import SHARED_FSDD, make_tokenizer, write_wav

from vqtok import load_tokenizer, read_codes
from vqtok.cli.card import depths


def test_decode_trims_to_the_original_length(tmp_path, audio_tok, cli):
    wav = write_wav(tmp_path / "a.wav", 3001)
    assert cli("encode", wav, "-m", audio_tok, "-o", tmp_path / "a.npy").exit_code == 0
    res = cli("decode", tmp_path / "a.npy", "-m", audio_tok, "-o", tmp_path / "a_dec.wav")
    assert res.exit_code == 0, res.output
    info = sf.info(tmp_path / "a_dec.wav")
    assert (info.frames, info.samplerate, info.channels) == (3001, 8000, 1)
    tok = load_tokenizer(audio_tok)
    codes = torch.from_numpy(read_codes(tmp_path / "a.npy", tok).levels[0])
    with torch.no_grad():
        ref = tok.decode(codes, size=3001)[0].clamp(-1, 1).numpy()
    y, _ = sf.read(tmp_path / "a_dec.wav", dtype="float32")
    assert np.abs(y - ref).max() < 1 / 32768 + 1e-6  # 16-bit WAV of the same signal
    assert cli("decode", tmp_path / "a.npy", "-m", audio_tok).exit_code == 0  # default: beside, not over a.wav
    assert sf.info(tmp_path / "a.decoded.wav").frames == 3001


def test_decode_at_the_original_rate(tmp_path, audio_tok, cli):
    wav = write_wav(tmp_path / "st.wav", 22051, sr=44100, channels=2, subtype="PCM_24")
    assert cli("encode", wav, "-m", audio_tok, "-o", tmp_path / "st.npy").exit_code == 0
    assert cli("decode", tmp_path / "st.npy", "-m", audio_tok, "-o", tmp_path / "o.wav",
               "--sample-rate", "original").exit_code == 0
    info = sf.info(tmp_path / "o.wav")
    assert (info.frames, info.samplerate) == (22051, 44100)
    assert cli("decode", tmp_path / "st.npy", "-m", audio_tok, "-o", tmp_path / "m.wav").exit_code == 0
    assert sf.info(tmp_path / "m.wav").frames == 4001  # ceil(22051 * 8000 / 44100)
    assert cli("decode", tmp_path / "st.npy", "-m", audio_tok, "-o", tmp_path / "k.wav",
               "--sample-rate", "16000").exit_code == 0
    assert sf.info(tmp_path / "k.wav").samplerate == 16000
    res = cli("decode", tmp_path / "st.npy", "-m", audio_tok, "-o", tmp_path / "z.wav", "--sample-rate", "fast")
    assert res.exit_code == 2


def test_decode_long_codes_chunked(tmp_path, audio_tok, cli):
    tok = load_tokenizer(audio_tok)
    n = int(2.5 * tok.block_frames * tok.hop)
    wav = write_wav(tmp_path / "long.wav", n)
    assert cli("encode", wav, "-m", audio_tok, "-o", tmp_path / "l.npy").exit_code == 0
    outs = []
    for chunk in ["0", "0.3"]:
        out = tmp_path / f"d{chunk}.wav"
        assert cli("decode", tmp_path / "l.npy", "-m", audio_tok, "-o", out, "--chunk-seconds", chunk).exit_code == 0
        outs.append(sf.read(out)[0])
    assert len(outs[0]) == n and np.array_equal(outs[0], outs[1])


def test_decode_images_to_png(tmp_path, cli):
    from PIL import Image

    tok_path = make_tokenizer(tmp_path / "img.safetensors", dims=2)
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (13, 21), dtype=np.uint8)).save(tmp_path / "a.png")
    assert cli("encode", tmp_path / "a.png", "-m", tok_path, "-o", tmp_path / "a.npy").exit_code == 0
    assert cli("decode", tmp_path / "a.npy", "-m", tok_path, "-o", tmp_path / "b.png").exit_code == 0
    with Image.open(tmp_path / "b.png") as img:
        assert img.size == (21, 13) and img.mode == "L"


def test_decode_ends_with_the_tokenizers_postfilter_unless_told_not_to(tmp_path, cli):
    from vqtok.tokenizer.postfilter import sharpen

    tok_path = make_tokenizer(tmp_path / "pf.safetensors", postfilter=1.3)
    wav = write_wav(tmp_path / "a.wav", 12001)
    assert cli("encode", wav, "-m", tok_path, "-o", tmp_path / "a.npy").exit_code == 0
    tok = load_tokenizer(tok_path)
    codes = torch.from_numpy(read_codes(tmp_path / "a.npy", tok).levels[0])
    with torch.no_grad():
        raw = tok.decode(codes, size=12001, postfilter=False)[0]
    for flags, ref in (((), sharpen(raw, 8000, 1.3)), (("--no-postfilter",), raw)):
        out = tmp_path / f"dec{len(flags)}.wav"
        assert cli("decode", tmp_path / "a.npy", "-m", tok_path, "-o", out, *flags).exit_code == 0
        y, _ = sf.read(out, dtype="float32")
        assert np.abs(y - ref.clamp(-1, 1).numpy()).max() < 1 / 32768 + 1e-5  # 16-bit WAV of the same signal
    assert (raw - sharpen(raw, 8000, 1.3)).abs().max() > 1e-3  # the two differ
    res = cli("info", tok_path)
    assert "postfilter    spectral sharpening, exponent 1.3: decode ends with it (--no-postfilter: not)" in res.stdout
    assert json.loads(cli("info", tok_path, "--json").stdout)["postfilter"] == 1.3


def test_info_model_card(tmp_path, audio_tok, cli):
    res = cli("info", audio_tok)
    assert res.exit_code == 0
    for text in ["architecture  vqvae (audio", "sample rate   8000 Hz", "64 codes (6 bits), downsample 20, 400 frames/s",
                 "tokens/s      400", "bitrate       2400.0 bit/s", "recipe test, step 1", "parameters"]:
        assert text in res.stdout, text
    card = json.loads(cli("info", audio_tok, "--json").stdout)
    assert card["levels"][0]["frame_rate"] == 400 and card["bitrate"] == 2400 and card["train"]["step"] == 1
    assert card["parameters"] == sum(p.numel() for p in load_tokenizer(audio_tok).parameters())
    assert "residual blocks a stage" not in res.stdout  # encoder and decoder alike
    level = {"res_depth": 3, "encoder_res_depth": 3, "decoder_res_depth": 5}
    assert depths(level) == ", 3 residual blocks a stage in the encoder (5 in the decoder)"
    lighter = {"res_depth": 3, "encoder_res_depth": 2}  # a card stored before decoder_res_depth
    assert depths(lighter) == ", 2 residual blocks a stage in the encoder (3 in the decoder)"
    two = make_tokenizer(tmp_path / "two.safetensors", arch="vqvae2")
    card = json.loads(cli("info", two, "--json").stdout)
    assert [lv["downsample"] for lv in card["levels"]] == [40, 20]
    assert card["tokens_per_second"] == 200 + 400 and card["bitrate"] == 200 * 5 + 400 * 6


def test_info_codes_file(tmp_path, audio_tok, cli):
    write_wav(tmp_path / "a.wav", 1000, sr=16000, channels=2)
    assert cli("encode", tmp_path / "a.wav", "-m", audio_tok).exit_code == 0
    res = cli("info", tmp_path / "a.npy")
    assert res.exit_code == 0
    assert "16000 Hz, 2 channel(s), 1000 frames -> 500 samples at 8000 Hz" in res.stdout
    assert "shape [25] int16" in res.stdout
    res = cli("info", tmp_path / "nothing.npy")
    assert res.exit_code == 2 and "nothing.npy" in res.stderr
    (tmp_path / "x.txt").write_text("hi")
    res = cli("info", tmp_path / "x.txt")
    assert res.exit_code == 2 and "not a vqtok tokenizer" in res.stderr


def test_eval_audio_folder_with_json(tmp_path, audio_tok, cli):
    pytest.importorskip("pesq", reason="PESQ needs the eval extra (pip install vqtok[eval])")
    src = tmp_path / "in"
    src.mkdir()
    for f in sorted(SHARED_FSDD.glob("*.wav"))[:8]:
        src.joinpath(f.name).write_bytes(f.read_bytes())
    res = cli("eval", "-m", audio_tok, src, "--json", tmp_path / "r.json")
    assert res.exit_code == 0, res.output
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["items"] == 8
    assert set(result["metrics"]) == {"si_snr", "log_mel_distance", "stoi", "pesq_nb"}
    assert 0 <= result["metrics"]["stoi"] <= 1 and 1 <= result["metrics"]["pesq_nb"] <= 4.6
    lv = result["levels"][0]
    assert 0 < lv["usage"] <= 1 and 1 <= lv["perplexity"] <= 64 and lv["entropy_bits"] == pytest.approx(np.log2(lv["perplexity"]))
    assert abs(result["bitrate"] - 2400) < 100  # padding to whole frames adds a little
    for word in ["si_snr", "stoi", "pesq_nb", "codes usage", "codes perplexity", "bitrate"]:
        assert word in res.stdout


def test_eval_images_on_a_recipe_validation_set(tmp_path, cli, mnist_root):
    tok_path = make_tokenizer(tmp_path / "img.safetensors", dims=2)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"name: t\nmodel: {{dims: 2}}\ndata: {{kind: mnist, root: {mnist_root}, valid_items: 64}}\n")
    res = cli("eval", "-m", tok_path, recipe, "--max-items", "10", "--json", tmp_path / "r.json")
    assert res.exit_code == 0, res.output
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["items"] == 10 and set(result["metrics"]) == {"mse", "psnr"}
    assert result["bits_per_image"] == 7 * 7 * 6  # 28x28 -> 7x7 codes of 6 bits
    assert result["metrics"]["psnr"] == pytest.approx(np.mean([10 * np.log10(1 / 1)]) * 0 + result["metrics"]["psnr"])


def test_eval_bad_data(tmp_path, audio_tok, cli):
    res = cli("eval", "-m", audio_tok, tmp_path / "missing")
    assert res.exit_code == 2 and "missing" in res.stderr
    (tmp_path / "empty").mkdir()
    res = cli("eval", "-m", audio_tok, tmp_path / "empty")
    assert res.exit_code == 2 and "no audio files" in res.stderr


@pytest.mark.parametrize("name", ["encode", "decode", "info", "eval"])
def test_help_has_an_example(cli, name):
    res = cli(name, "--help")
    assert res.exit_code == 0 and "Examples:" in res.stdout and f"vqtok {name} " in res.stdout
