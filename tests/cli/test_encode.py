"""`vqtok encode`: single files, folders mirrored with a manifest, resume, conversion, long files, batches."""

import json
import shutil

import numpy as np
import soundfile as sf
import torch
from clihelpers import SHARED_FSDD, listing, make_tokenizer, tone, write_wav

from vqtok import load_tokenizer, read_codes
from vqtok.data.audio import load_audio
from vqtok import speech_level


def test_single_file_to_named_output(tmp_path, audio_tok, cli):
    wav = write_wav(tmp_path / "in" / "a.wav", 3001)
    res = cli("encode", wav, "-m", audio_tok, "-o", tmp_path / "a.npy")
    assert res.exit_code == 0, res.output
    tok = load_tokenizer(audio_tok)
    file = read_codes(tmp_path / "a.npy", tok)
    assert file.levels[0].shape == (151,)  # 3001 samples padded to 3020, hop 20
    x, _ = load_audio(wav, 8000)
    with torch.no_grad():
        assert np.array_equal(file.levels[0], tok.encode(torch.from_numpy(x)).numpy())
    assert file.source["length"] == 3001 and file.source["orig_frames"] == 3001
    assert not (tmp_path / "manifest.jsonl").exists()


def test_default_output_is_beside_the_input(tmp_path, audio_tok, cli):
    wav = write_wav(tmp_path / "b.wav", 800)
    assert cli("encode", wav, "-m", audio_tok).exit_code == 0
    assert (tmp_path / "b.npy").is_file() and (tmp_path / "b.npy.json").is_file()


def test_folder_is_mirrored_with_a_manifest_and_labels(tmp_path, audio_tok, cli):
    src = tmp_path / "fsdd"
    for name in ["0_george_0.wav", "7_lucas_12.wav", "deep/er/3_jackson_5.wav", "notes/readme.wav.txt"]:
        if name.endswith(".wav"):
            write_wav(src / name, 900 + 10 * len(name))
        else:
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            (src / name).write_text("not audio")
    res = cli("encode", src, "-m", audio_tok, "-o", tmp_path / "out", "--labels", "fsdd", "--quiet")
    assert res.exit_code == 0, res.output
    out = tmp_path / "out"
    assert listing(out) == ["0_george_0.npy", "0_george_0.npy.json", "7_lucas_12.npy", "7_lucas_12.npy.json",
                            "deep", "deep/er", "deep/er/3_jackson_5.npy", "deep/er/3_jackson_5.npy.json",
                            "manifest.jsonl"]
    lines = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert [e["codes"] for e in lines] == ["0_george_0.npy", "7_lucas_12.npy", "deep/er/3_jackson_5.npy"]
    assert [e["label"] for e in lines] == [0, 7, 3]
    first = lines[0]
    assert first["kind"] == "audio" and first["path"].endswith("0_george_0.wav")
    assert first["length"] == 900 + 10 * len("0_george_0.wav") and first["frames"] == [-(-first["length"] // 20)]
    assert abs(first["duration"] - first["length"] / 8000) < 1e-9


def test_auto_labels_follow_the_recipe_beside_the_tokenizer(tmp_path, audio_tok, cli):
    (audio_tok.parent / "recipe.yaml").write_text("data: {kind: audio, rule: fsdd}\n")
    write_wav(tmp_path / "in" / "4_nicolas_9.wav", 500)
    assert cli("encode", tmp_path / "in", "-m", audio_tok, "-o", tmp_path / "out", "--quiet").exit_code == 0
    assert json.loads((tmp_path / "out" / "manifest.jsonl").read_text())["label"] == 4


def test_rerun_skips_files_already_done(tmp_path, audio_tok, cli):
    src = tmp_path / "in"
    for i in range(3):
        write_wav(src / f"{i}.wav", 700 + i, seed=i)
    out = tmp_path / "out"
    assert cli("encode", src, "-m", audio_tok, "-o", out, "--quiet").exit_code == 0
    manifest = (out / "manifest.jsonl").read_text()
    # simulate an interruption: one result lost, another half-written (array without sidecar)
    (out / "1.npy").unlink()
    (out / "1.npy.json").unlink()
    (out / "2.npy.json").unlink()
    (out / "manifest.jsonl").unlink()
    before = (out / "0.npy").stat().st_mtime_ns
    res = cli("encode", src, "-m", audio_tok, "-o", out, "--quiet")
    assert res.exit_code == 0
    assert "2 encoded, 1 already done, 0 failed" in res.stderr
    assert (out / "0.npy").stat().st_mtime_ns == before
    assert (out / "manifest.jsonl").read_text() == manifest


def test_other_rates_channels_and_depths_are_converted(tmp_path, audio_tok, cli):
    tok = load_tokenizer(audio_tok)
    cases = {"stereo.wav": (44100, 2, "PCM_16"), "deep.wav": (8000, 1, "PCM_24"), "hi.wav": (96000, 1, "PCM_16"),
             "lo.wav": (8000, 1, "PCM_16"), "float.flac": (16000, 3, "PCM_24")}
    for name, (sr, ch, sub) in cases.items():
        write_wav(tmp_path / "in" / name, int(0.3 * sr) + 1, sr, ch, sub)
    assert cli("encode", tmp_path / "in", "-m", audio_tok, "-o", tmp_path / "out", "--quiet").exit_code == 0
    for name, (sr, ch, _) in cases.items():
        file = read_codes(tmp_path / "out" / (name.split(".")[0] + ".npy"), tok)
        x, info = load_audio(tmp_path / "in" / name, 8000)
        assert file.source["orig_sample_rate"] == sr and file.source["channels"] == ch
        assert file.source["orig_frames"] == int(0.3 * sr) + 1 and file.source["length"] == len(x)
        with torch.no_grad():
            assert np.array_equal(file.levels[0], tok.encode(torch.from_numpy(x)).numpy()), name


def test_long_file_codes_identical_at_any_chunk_size(tmp_path, audio_tok, cli):
    tok = load_tokenizer(audio_tok)
    n = int(3.5 * tok.block_frames * tok.hop) + 11  # 3.5 blocks
    wav = write_wav(tmp_path / "long.wav", n, sr=16000)  # resampled on the way in, streamed
    results = []
    for i, chunk in enumerate(["0", "0.05", "1", "7"]):
        out = tmp_path / f"c{i}.npy"
        assert cli("encode", wav, "-m", audio_tok, "-o", out, "--chunk-seconds", chunk).exit_code == 0
        results.append(np.load(out))
    assert all(np.array_equal(results[0], r) for r in results[1:])
    x, _ = load_audio(wav, 8000)
    assert np.array_equal(results[0], tok.encode_long(torch.from_numpy(x)).numpy())


def test_batch_size_does_not_change_codes(tmp_path, audio_tok, cli):
    for i in range(5):
        write_wav(tmp_path / "in" / f"{i}.wav", 300 + 397 * i, seed=i)
    outs = []
    for bs in ["1", "4"]:
        out = tmp_path / f"out{bs}"
        assert cli("encode", tmp_path / "in", "-m", audio_tok, "-o", out, "--batch-size", bs, "--quiet").exit_code == 0
        outs.append(out)
    for i in range(5):
        assert np.array_equal(np.load(outs[0] / f"{i}.npy"), np.load(outs[1] / f"{i}.npy"))


def test_hierarchical_tokenizer_writes_npz(tmp_path, cli):
    tok_path = make_tokenizer(tmp_path / "tok2.safetensors", arch="vqvae2")
    wav = write_wav(tmp_path / "a.wav", 1234)
    assert cli("encode", wav, "-m", tok_path, "-o", tmp_path / "a.npz").exit_code == 0
    file = read_codes(tmp_path / "a.npz", load_tokenizer(tok_path))
    assert [a.shape for a in file.levels] == [(31,), (62,)]
    res = cli("encode", wav, "-m", tok_path, "-o", tmp_path / "b.npy")
    assert res.exit_code == 2 and "writes .npz files" in res.stderr


def test_images_folder(tmp_path, cli):
    from PIL import Image

    tok_path = make_tokenizer(tmp_path / "img.safetensors", dims=2)
    rng = np.random.default_rng(0)
    for name, (h, w) in {"cats/a.png": (16, 16), "dogs/b.jpg": (13, 21)}.items():
        (tmp_path / "in" / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(tmp_path / "in" / name)
    res = cli("encode", tmp_path / "in", "-m", tok_path, "-o", tmp_path / "out", "--labels", "folder", "--quiet")
    assert res.exit_code == 0, res.output
    lines = [json.loads(x) for x in (tmp_path / "out" / "manifest.jsonl").read_text().splitlines()]
    assert [(e["codes"], e["size"], e["frames"], e["label"]) for e in lines] == [
        ("cats/a.npy", [16, 16], [[4, 4]], 0), ("dogs/b.npy", [13, 21], [[4, 6]], 1)]
    assert np.load(tmp_path / "out" / "dogs" / "b.npy").shape == (4, 6)


def test_a_colour_image_for_a_grey_tokenizer_is_named_on_stderr(tmp_path, cli):
    """A 112x112 RGB picture given to a 1-channel tokenizer (like mnist) encodes at its own size as grey, and the
    run says so on stderr; a grey picture passes without a word."""
    from PIL import Image

    tok_path = make_tokenizer(tmp_path / "img.safetensors", dims=2)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (112, 112, 3), dtype=np.uint8)).save(tmp_path / "rgb.png")
    Image.fromarray(rng.integers(0, 255, (112, 112), dtype=np.uint8)).save(tmp_path / "grey.png")
    res = cli("encode", tmp_path / "rgb.png", "-m", tok_path, "-o", tmp_path / "rgb.npy")
    assert res.exit_code == 0, res.output
    assert "rgb.png: RGB pixels, converted to grey for this 1-channel tokenizer; it decodes as grey" in res.stderr
    file = read_codes(tmp_path / "rgb.npy", load_tokenizer(tok_path))
    assert file.source["size"] == [112, 112] and file.source["channels"] == 1 and file.levels[0].shape == (28, 28)
    res = cli("encode", tmp_path / "grey.png", "-m", tok_path, "-o", tmp_path / "grey.npy")
    assert res.exit_code == 0 and "converted" not in res.stderr


def test_fsdd_subset_encodes_and_decodes_to_the_original_lengths(tmp_path, audio_tok, cli):
    src = tmp_path / "fsdd"
    src.mkdir()
    recordings = sorted(SHARED_FSDD.glob("*.wav"))
    for f in recordings[::len(recordings) // 20][:20]:  # 20 real recordings, spread over the folder
        shutil.copy(f, src / f.name)
    out = tmp_path / "codes"
    assert cli("encode", src, "-m", audio_tok, "-o", out, "--labels", "fsdd", "--quiet").exit_code == 0
    entries = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    assert len(entries) == 20 and all(e["label"] == int(e["codes"][0]) for e in entries)
    assert cli("decode", out, "-m", audio_tok, "-o", tmp_path / "dec").exit_code == 0
    for e in entries:
        name = e["codes"].replace(".npy", ".wav")
        assert sf.info(tmp_path / "dec" / name).frames == sf.info(src / name).frames


def test_a_tokenizer_with_a_level_encodes_each_file_at_it_and_decode_gives_back_the_files_level(tmp_path, cli):
    tok_path = make_tokenizer(tmp_path / "lv.safetensors", level_db=-20.0)
    tok = load_tokenizer(tok_path)
    long_n = int(3.5 * tok.block_frames * tok.hop) + 11  # streamed block by block, its level measured first
    for name, n in (("short", 3001), ("long", long_n)):
        wav = tmp_path / f"{name}.wav"
        sf.write(wav, 0.1 * tone(n)[:, 0], 8000, subtype="FLOAT")  # ~ -34 dBFS
        codes_file = tmp_path / f"{name}.npy"
        assert cli("encode", wav, "-m", tok_path, "-o", codes_file, "--chunk-seconds", "0.3").exit_code == 0
        file = read_codes(codes_file, tok)
        x, _ = load_audio(wav, 8000)
        gain = file.source["gain_db"]
        assert gain == speech_level.gain_to(speech_level.level_db(x, 8000), -20.0) and 13 < gain < 15
        with torch.no_grad():
            at_level = torch.from_numpy(speech_level.apply_gain(x, gain))
            expected = tok.encode(at_level) if name == "short" else tok.encode_long(at_level)
        assert np.array_equal(file.levels[0], expected.numpy())
        assert cli("decode", codes_file, "-m", tok_path, "-o", tmp_path / f"{name}.dec.wav").exit_code == 0
        y, _ = sf.read(tmp_path / f"{name}.dec.wav", dtype="float32")
        with torch.no_grad():
            ref = tok.decode_long(file.levels[0], size=n)[0].numpy() * 10 ** (-gain / 20)
        np.testing.assert_allclose(y, np.clip(ref, -1, 1), atol=1.01 / 32768)  # 16-bit WAV


def test_a_tokenizer_without_a_level_encodes_files_as_they_are(tmp_path, audio_tok, cli):
    wav = write_wav(tmp_path / "a.wav", 3001)
    assert cli("encode", wav, "-m", audio_tok, "-o", tmp_path / "a.npy").exit_code == 0
    assert "gain_db" not in read_codes(tmp_path / "a.npy", load_tokenizer(audio_tok)).source


def test_as_is_encodes_a_file_at_its_own_level_with_a_tokenizer_that_has_one(tmp_path, cli):
    tok_path = make_tokenizer(tmp_path / "lv.safetensors", level_db=-20.0)
    wav = tmp_path / "quiet.wav"
    sf.write(wav, 0.1 * tone(3001)[:, 0], 8000, subtype="FLOAT")
    assert cli("encode", wav, "-m", tok_path, "-o", tmp_path / "a.npy", "--as-is").exit_code == 0
    tok = load_tokenizer(tok_path)
    file = read_codes(tmp_path / "a.npy", tok)
    x, _ = load_audio(wav, 8000)
    with torch.no_grad():
        assert np.array_equal(file.levels[0], tok.encode(torch.from_numpy(x)).numpy())
    assert "gain_db" not in file.source
