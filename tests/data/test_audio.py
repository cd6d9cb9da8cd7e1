"""Tests for audio loading, the file-name rules and AudioFolder (synthesized clips and the real FSDD)."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from testdata import SHARED_DATA, needs_corpus
from vqtok.data.audio import AudioFolder, ConcatClips, RandomGain, list_audio_files, load_audio, resample
from vqtok.data.rules import RULES, fsdd_rule, get_rule, hash_rule, hash_split
from vqtok.errors import VqtokError
from vqtok.speech_level import level_db

FSDD_DIR = SHARED_DATA / "fsdd" / "recordings"


def ramp(n: int) -> np.ndarray:
    """Distinct float32 samples, so a crop's position can be read off its first sample."""
    return (np.arange(n) / n * 0.9).astype(np.float32)


def write(path: Path, data: np.ndarray, sr: int, subtype: str = "FLOAT") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, data, sr, subtype=subtype)
    return path


def one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "\n" not in msg
    return msg


@pytest.fixture
def clips(tmp_path) -> Path:
    """Four FSDD-named clips at 8 kHz: two long (0.5 s), one short (0.1 s), one long test take."""
    root = tmp_path / "clips"
    write(root / "3_ann_7.wav", ramp(4000), 8000)
    write(root / "5_bob_12.wav", ramp(4000)[::-1].copy(), 8000)
    write(root / "sub" / "1_ann_9.wav", ramp(800), 8000)
    write(root / "2_bob_0.wav", ramp(4000), 8000)
    return root


# --- listing ---


def test_list_audio_files(tmp_path):
    for name in ["b.wav", "a/c.FLAC", "a/d.Ogg", "e.mp3", "notes.txt", "f.wav.bak", ".hidden/g.wav", "._h.wav"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    got = [p.relative_to(tmp_path).as_posix() for p in list_audio_files(tmp_path)]
    assert got == ["a/c.FLAC", "a/d.Ogg", "b.wav", "e.mp3"]
    assert list_audio_files(tmp_path / "b.wav") == [tmp_path / "b.wav"]
    with pytest.raises(VqtokError, match="no such file or folder"):
        list_audio_files(tmp_path / "missing")


# --- load_audio ---


def test_load_mono_unchanged(tmp_path):
    data = np.sin(np.linspace(0, 20, 1000)).astype(np.float32) * 0.5
    wav, info = load_audio(write(tmp_path / "a.wav", data, 16000), 16000)
    assert wav.dtype == np.float32 and wav.shape == (1000,)
    np.testing.assert_array_equal(wav, data)
    assert (info.orig_sample_rate, info.channels, info.orig_frames) == (16000, 1, 1000)
    assert info.duration_seconds == pytest.approx(1000 / 16000)


def test_stereo_mixed_by_average(tmp_path):
    left, right = np.full(500, 0.6, np.float32), np.full(500, -0.2, np.float32)
    wav, info = load_audio(write(tmp_path / "s.flac", np.stack([left, right], 1), 8000, "PCM_24"), 8000)
    assert info.channels == 2 and wav.shape == (500,)
    np.testing.assert_allclose(wav, 0.2, atol=1e-6)


def test_24bit_stereo_96k_resampled(tmp_path):
    sr, n = 96000, 9600  # 0.1 s
    tone = 0.5 * np.sin(2 * np.pi * 1000 * np.arange(n) / sr)
    path = write(tmp_path / "hi.wav", np.stack([tone, tone], 1), sr, "PCM_24")
    wav, info = load_audio(path, 16000)
    assert info.orig_sample_rate == sr and info.channels == 2 and info.orig_frames == n
    assert wav.dtype == np.float32 and wav.shape == (1600,)
    # A 1 kHz tone is still a 1 kHz tone at 16 kHz (edges excluded: the filter's transient).
    expected = 0.5 * np.sin(2 * np.pi * 1000 * np.arange(1600) / 16000)
    np.testing.assert_allclose(wav[100:-100], expected[100:-100], atol=1e-3)


@pytest.mark.slow
@pytest.mark.parametrize("orig_sr,target_sr,n", [(96000, 16000, 9600), (8000, 16000, 1001), (44100, 24000, 1234)])
def test_resample_matches_librosa(orig_sr, target_sr, n):
    import librosa  # slow: importing librosa costs seconds, hence the slow mark
    x = np.random.default_rng(0).standard_normal(n).astype(np.float32)
    expected = librosa.resample(x, orig_sr=orig_sr, target_sr=target_sr, res_type="soxr_hq")
    np.testing.assert_array_equal(resample(x, orig_sr, target_sr), expected)


def test_missing_file(tmp_path):
    with pytest.raises(VqtokError, match="not found") as err:
        load_audio(tmp_path / "nope.wav", 8000)
    assert "nope.wav" in one_line(err)


def test_empty_file(tmp_path):
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(VqtokError, match="empty") as err:
        load_audio(tmp_path / "empty.wav", 8000)
    assert "empty.wav" in one_line(err)


def test_zero_frames(tmp_path):
    path = write(tmp_path / "zero.wav", np.zeros(0, np.float32), 8000, "PCM_16")
    with pytest.raises(VqtokError, match="no audio frames") as err:
        load_audio(path, 8000)
    assert "zero.wav" in one_line(err)


def test_text_named_wav(tmp_path):
    (tmp_path / "readme.wav").write_text("this is not audio\n" * 10)
    with pytest.raises(VqtokError, match="not readable as audio") as err:
        load_audio(tmp_path / "readme.wav", 8000)
    assert "readme.wav" in one_line(err)


def test_truncated_wav_header(tmp_path):
    path = write(tmp_path / "cut.wav", ramp(1000), 8000, "PCM_16")
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(VqtokError, match=r"truncated WAV \(no complete data chunk\)") as err:
        load_audio(path, 8000)
    assert "cut.wav" in one_line(err)


def test_truncated_wav_data(tmp_path):
    # libsndfile alone would return the 800 samples that are left without a word.
    path = write(tmp_path / "cut.wav", ramp(1000), 8000, "PCM_16")
    path.write_bytes(path.read_bytes()[:-400])
    declared = r"truncated WAV \(the header declares 2000 bytes of audio, the file holds 1600\)"
    with pytest.raises(VqtokError, match=declared) as err:
        load_audio(path, 8000)
    assert "cut.wav" in one_line(err)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_samples(tmp_path, bad):
    data = ramp(100)
    data[[10, 50]] = bad
    path = write(tmp_path / "nan.wav", data, 8000, "FLOAT")
    with pytest.raises(VqtokError, match="2 of 100 samples are NaN or Inf") as err:
        load_audio(path, 8000)
    assert "nan.wav" in one_line(err)


# --- rules ---


def test_fsdd_rule():
    assert fsdd_rule("7_jackson_0.wav") == (7, "test")
    assert fsdd_rule("7_jackson_4.wav") == (7, "test")
    assert fsdd_rule("0_george_5.wav") == (0, "train")
    assert fsdd_rule("sub/9_two_words_49.wav") == (9, "train")
    with pytest.raises(ValueError):
        fsdd_rule("hello.wav")


def test_hash_rule_is_stable_and_about_five_percent():
    keys = [f"speaker{i % 37}/clip_{i}.wav" for i in range(20000)]
    splits = [hash_rule(k) for k in keys]
    assert all(label == -1 for label, _ in splits)
    fraction = sum(s == "test" for _, s in splits) / len(keys)
    assert 0.04 < fraction < 0.06
    # Pinned: a change to the hash would silently move files between train and test.
    assert [k for k in (f"{i}.wav" for i in range(100)) if hash_split(k) == "test"] == [
        "5.wav", "16.wav", "19.wav", "26.wav", "92.wav"
    ]


def test_unknown_rule_lists_choices():
    assert get_rule(None) is RULES["hash"]
    with pytest.raises(VqtokError, match="fsdd, fsdd_speaker, folders, hash"):
        get_rule("librispeech")


# --- AudioFolder on synthesized clips ---


def test_folder_random_crop(clips):
    ds = AudioFolder(clips, 8000, 0.25, split="train", rule="fsdd")
    assert [f.name for f in ds.files] == ["3_ann_7.wav", "5_bob_12.wav", "1_ann_9.wav"]
    assert ds.labels == [3, 5, 1] and ds.num_classes == 10 and ds.segment_samples == 2000
    assert ds.durations == pytest.approx([0.5, 0.5, 0.1])
    clip = ramp(4000)
    torch.manual_seed(0)
    starts = []
    for _ in range(20):
        item = ds[0]
        assert item["x"].shape == item["mask"].shape == (1, 2000) and item["x"].dtype == torch.float32
        assert item["mask"].min() == 1 and item["label"].dtype == torch.int64 and item["index"] == 0
        start = int(np.argmin(np.abs(clip - item["x"][0, 0].item())))
        np.testing.assert_array_equal(item["x"][0].numpy(), clip[start : start + 2000])
        starts.append(start)
    assert len(set(starts)) > 10 and min(starts) >= 0 and max(starts) <= 2000
    # torch's global RNG drives the crop: re-seeding replays it (DataLoader worker seeding, resume).
    torch.manual_seed(0)
    first = [ds[0]["x"] for _ in range(3)]
    torch.manual_seed(0)
    assert all(torch.equal(a, ds[0]["x"]) for a in first)


def test_folder_short_clip_padded_with_mask(clips):
    ds = AudioFolder(clips, 8000, 0.25, split="train", rule="fsdd")
    item = ds[2]  # 800 samples < 2000
    np.testing.assert_array_equal(item["x"][0, :800].numpy(), ramp(800))
    assert (item["x"][0, 800:] == 0).all()
    assert (item["mask"][0, :800] == 1).all() and (item["mask"][0, 800:] == 0).all()


def test_folder_validation_is_centred_and_deterministic(clips):
    ds = AudioFolder(clips, 8000, 0.25, split="train", rule="fsdd", random_crop=False)
    a, b = ds[0], ds[0]
    assert torch.equal(a["x"], b["x"])
    np.testing.assert_array_equal(a["x"][0].numpy(), ramp(4000)[1000:3000])


def test_folder_whole_clips_and_lazy_loading(clips):
    eager = AudioFolder(clips, 8000, None, split="all", rule="fsdd")
    lazy = AudioFolder(clips, 8000, None, split="all", rule="fsdd", preload=False)
    assert len(eager) == len(lazy) == 4 and eager.durations == pytest.approx(lazy.durations)
    for i in range(4):
        assert torch.equal(eager[i]["x"], lazy[i]["x"])
    assert eager.files[3].name == "1_ann_9.wav"  # sorted by relative path: sub/ comes last
    assert eager[3]["x"].shape == (1, 800) and eager[3]["mask"].min() == 1


def test_folder_level_db_scales_each_clip_to_the_level(tmp_path):
    t = np.arange(8000) / 8000
    tone = np.sin(2 * np.pi * 200 * t).astype(np.float32)
    root = tmp_path / "level"
    write(root / "train" / "quiet.wav", 0.01 * tone, 8000)
    write(root / "train" / "loud.wav", 0.5 * tone, 8000)
    write(root / "train" / "silent.wav", np.zeros(8000, np.float32), 8000)
    plain = AudioFolder(root, 8000, None, rule="folders")
    assert level_db(plain.clip(0), 8000) == pytest.approx(20 * np.log10(0.5 / np.sqrt(2)), abs=0.01)  # as stored
    for preload in (True, False):
        ds = AudioFolder(root, 8000, None, rule="folders", preload=preload, level_db=-24.0)
        for i in range(2):  # loud, quiet: the same waveform scaled to -24 dBFS
            assert level_db(ds.clip(i), 8000) == pytest.approx(-24.0, abs=1e-3)
            ratio = ds.clip(i)[100:200] / plain.clip(i)[100:200]
            assert np.allclose(ratio, ratio[0], rtol=1e-5) and ratio[0] > 0
        assert np.array_equal(ds.clip(2), plain.clip(2))  # silence stays silence
        assert torch.equal(ds[0]["x"][0], torch.from_numpy(ds.clip(0)))


def test_random_gain_scales_whole_items_within_the_range(clips):
    base = AudioFolder(clips, 8000, 0.25, split="train", rule="fsdd", random_crop=False)
    with pytest.raises(VqtokError, match="gain_db must be positive"):
        RandomGain(base, 0.0)
    gained = RandomGain(base, 6.0)
    assert len(gained) == len(base) and gained.labels == base.labels
    torch.manual_seed(0)
    gains = []
    for _ in range(40):
        item, plain = gained[0], base[0]
        ratio = item["x"][0, 10:] / plain["x"][0, 10:]
        assert torch.allclose(ratio, ratio[0]) and torch.equal(item["mask"], plain["mask"])
        gains.append(20 * torch.log10(ratio[0]).item())
    assert -6.0 <= min(gains) < -3.0 and 3.0 < max(gains) <= 6.0
    torch.manual_seed(0)  # torch's global RNG: the same seed, the same gains
    assert 20 * torch.log10(gained[0]["x"][0, 10] / base[0]["x"][0, 10]).item() == pytest.approx(gains[0], abs=1e-4)


def test_concat_clips_draws_then_gain_as_one_dataset_did(clips):
    """ConcatClips followed by RandomGain draws torch's RNG in the order ConcatClips alone did with its gain:
    the crop and gap draws, then the gain."""
    base = AudioFolder(clips, 8000, 0.25, split="train", rule="fsdd")
    torch.manual_seed(3)
    got = RandomGain(ConcatClips(base), 6.0)[1]["x"]
    torch.manual_seed(3)
    crop = ConcatClips(base)[1]["x"]
    gain = 10 ** ((torch.rand(()) * 2 - 1) * 6.0 / 20)
    assert torch.equal(got, crop * gain)


def test_folder_resamples_once(clips):
    ds = AudioFolder(clips, 4000, 0.1, split="test", rule="fsdd")
    assert [f.name for f in ds.files] == ["2_bob_0.wav"]
    assert ds.clip(0).shape == (2000,) and ds.durations == pytest.approx([0.5])
    assert ds[0]["x"].shape == (1, 400)


def test_folder_hash_rule_and_max_files(clips):
    ds = AudioFolder(clips, 8000, 0.1, split="all", rule=None, max_files=2)
    assert len(ds) == 2 and ds.labels == [-1, -1] and ds.num_classes is None
    train = AudioFolder(clips, 8000, 0.1, split="train")
    expected = [p for p in list_audio_files(clips) if hash_split(p.relative_to(clips).as_posix()) == "train"]
    assert train.files == expected


def test_folder_dataloader(clips):
    ds = AudioFolder(clips, 8000, 0.25, split="train", rule="fsdd")
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=3)))
    assert batch["x"].shape == batch["mask"].shape == (3, 1, 2000)
    assert batch["label"].tolist() == [3, 5, 1] and batch["index"].tolist() == [0, 1, 2]


def test_folder_skips_bad_files_with_one_warning_each(clips, caplog):
    (clips / "4_bad_8.wav").write_text("not audio")
    (clips / "6_bad_9.wav").write_bytes(b"")
    write(clips / "7_bad_10.wav", np.full(100, np.nan, np.float32), 8000)
    write(clips / "oddname.wav", ramp(100), 8000)
    with caplog.at_level(logging.WARNING, logger="vqtok.data.audio"):
        ds = AudioFolder(clips, 8000, 0.25, split="train", rule="fsdd")
    assert len(ds) == 3
    for name in ["4_bad_8.wav", "6_bad_9.wav", "7_bad_10.wav", "oddname.wav"]:
        assert sum(name in r.getMessage() for r in caplog.records) == 1, name
    assert len(caplog.records) == 4


def test_folder_without_usable_audio(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(VqtokError, match="no .wav/.flac/.ogg/.mp3 files") as err:
        AudioFolder(tmp_path / "empty", 8000, 0.5)
    assert str(tmp_path / "empty") in one_line(err)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.wav").write_text("nope")
    with pytest.raises(VqtokError, match="unreadable") as err:
        AudioFolder(tmp_path / "bad", 8000, 0.5, split="all")
    assert str(tmp_path / "bad") in one_line(err)


def test_folder_bad_arguments(clips):
    with pytest.raises(VqtokError, match="train, test, all"):
        AudioFolder(clips, 8000, 0.5, split="valid")
    with pytest.raises(VqtokError, match="segment_seconds"):
        AudioFolder(clips, 8000, 0.0)
    with pytest.raises(VqtokError, match="under one sample"):
        AudioFolder(clips, 8000, 1e-5)
    with pytest.raises(VqtokError, match="sample_rate"):
        AudioFolder(clips, 0, 0.5)
    with pytest.raises(VqtokError, match="fsdd, fsdd_speaker, folders, hash"):
        AudioFolder(clips, 8000, 0.5, rule="nope")


# --- the real Free Spoken Digit Dataset ---


@needs_corpus  # all 2,500 recordings
def test_fsdd_rule_on_real_names():
    files = list_audio_files(FSDD_DIR)
    assert len(files) == 2500
    placed = [fsdd_rule(p.name) for p in files]
    assert Counter(s for _, s in placed) == {"test": 250, "train": 2250}
    assert Counter(label for label, _ in placed) == {d: 250 for d in range(10)}
    # The hash rule, applied to the same names, gives the advertised ~5%.
    assert 75 <= sum(hash_split(p.name) == "test" for p in files) <= 175


@needs_corpus  # the 250 test takes
def test_fsdd_test_split():
    ds = AudioFolder(FSDD_DIR, 8000, 0.5, split="test", rule="fsdd", random_crop=False)
    assert len(ds) == 250 and ds.num_classes == 10
    assert Counter(ds.labels) == {d: 25 for d in range(10)}
    assert {p.stem.split("_")[1] for p in ds.files} == {"george", "jackson", "lucas", "nicolas", "yweweler"}
    assert all(int(p.stem.split("_")[2]) < 5 for p in ds.files)
    # FSDD clips run from 0.14 s to 1.3 s; 0.5 s segments therefore need padding on some.
    assert 0.14 <= min(ds.durations) and max(ds.durations) <= 1.32
    item = ds[0]
    assert item["x"].shape == (1, 4000) and item["x"].abs().max() <= 1.0


@needs_corpus  # 20 training takes
def test_fsdd_train_subset():
    ds = AudioFolder(FSDD_DIR, 8000, 0.25, split="train", rule="fsdd", max_files=20)
    assert len(ds) == 20 and all(int(p.stem.split("_")[2]) >= 5 for p in ds.files)


def test_fsdd_speaker_rule_holds_one_speaker_out():
    from vqtok.data.rules import FSDD_HELDOUT_SPEAKER, fsdd_speaker_rule

    assert fsdd_speaker_rule(f"3_{FSDD_HELDOUT_SPEAKER}_0.wav") == (3, "test")
    assert fsdd_speaker_rule(f"3_{FSDD_HELDOUT_SPEAKER}_40.wav") == (3, "test")
    assert fsdd_speaker_rule("3_george_40.wav") == (3, "train")
    assert fsdd_speaker_rule("3_george_2.wav") == (3, "unused")  # FSDD test takes: never trained on


def test_folders_rule():
    from vqtok.data.rules import folders_rule

    assert folders_rule("train/librispeech/1-2-3.flac") == (-1, "train")
    assert folders_rule("test/x/a.flac") == (-1, "test")
    for bad in ("valid/a.flac", "a.flac", "training/a.flac"):
        with pytest.raises(ValueError):
            folders_rule(bad)
