"""bench/speech_codecs.py: tokenizer rows at another rate than the table's, usage columns, missing tools."""

import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from testdata import SHARED_DATA
from speech_codecs import CLASSICAL, Codec, header, opus, row, tokenizer_codecs, usage_cells
from speech_protocol import EvalPiece

from vqtok import save_tokenizer
from vqtok.data.audio import resample
from vqtok import speech_level
from vqtok.tokenizer import LevelConfig, TokenizerConfig, build_tokenizer
from vqtok.tokenizer.postfilter import sharpen

SPEECH_FILE = SHARED_DATA / "speech" / "test" / "librispeech-test-other" / "1688-142285-0000.flac"


def speech() -> np.ndarray:
    """2 s of real read speech at 16 kHz."""
    audio, rate = sf.read(SPEECH_FILE, dtype="float32")
    assert rate == 16000
    return audio[16000:48000]


def test_usage_cells_per_codebook() -> None:
    codec = Codec("t", 8000, 1.0, lambda a: a, codebook_sizes=(8, 4))
    codec.codes = [[np.arange(8), np.zeros(3, int)], [np.array([0, 1]), np.zeros(1, int)]]
    # Codebook 1: all 8 codes, counts 2,2,1,1,1,1,1,1 of 10: entropy 0.4 log2(5) + 0.6 log2(10) = 2.9219 bits
    # of 3. Codebook 2: one code of 4, entropy 0.
    assert usage_cells(codec) == ("100.0 / 25.0", "0.974 / 0.000")
    assert usage_cells(Codec("classical", 8000, 1.0, lambda a: a)) == ("-", "-")


def test_tokenizer_at_its_own_rate_in_a_16k_table(tmp_path: Path) -> None:
    cfg = TokenizerConfig(arch="vqvae", dims=1, sample_rate=8000,
                          net=LevelConfig(channels=[8, 16], strides=[2, 2], res_depth=1, code_dim=4, codebook_size=16))
    tok = build_tokenizer(cfg)
    tok.train()(torch.randn(2, 1, 256))  # k-means codebook init
    (tmp_path / "run").mkdir()
    save_tokenizer(tok.eval(), tmp_path / "run" / "tokenizer.safetensors", train_info={"recipe": "t", "step": 0})
    [codec] = tokenizer_codecs(str(tmp_path / "run"), 16000)
    assert (codec.name, codec.rate, codec.bitrate) == ("vqtok run", 8000, 8000.0)  # 2000 codes/s x 4 bits
    x = speech()
    y = codec.fn(x)  # (32000,) at 16 kHz through the 8 kHz model
    x8 = resample(x, 16000, 8000)  # what running the model at its own rate by hand looks like
    with torch.no_grad():
        codes = tok.encode(torch.from_numpy(x8)[None, None])  # (1, 4000): hop 4
        out8 = tok.decode(codes, size=len(x8))[0, 0].numpy()
    assert len(codec.codes) == 1 and np.array_equal(codec.codes[0][0], codes.numpy())
    assert y.shape == x.shape and np.allclose(y, resample(out8, 8000, 16000), atol=1e-6)
    assert np.abs(y).max() > 0


def test_missing_tool_gives_a_row_saying_so() -> None:
    codec = Codec("ghost", 8000, 1000.0, lambda a: a, tools=("no-such-codec-tool",))
    line = row(codec, [EvalPiece(resample(speech(), 16000, 8000))], 8000, ("nb",))
    assert "not run: no-such-codec-tool not installed" in line
    assert line.count("|") == header(("nb",))[0].count("|")


def test_classical_rows_are_the_issue_table() -> None:
    assert [c.name for c in CLASSICAL[16000]] == [f"Opus {k} (hard CBR)" for k in (16, 12, 8, 6)]
    assert [c.bitrate for c in CLASSICAL[8000]] == [13000, 6000, 3200, 1600, 700]


# opus-tools is a system package (apt/brew), not a pip one: .ci/run installs it where apt-get works; the table rows
# above and the missing-tool row are checked without it.
@pytest.mark.skipif(shutil.which("opusenc") is None, reason="opus-tools (opusenc/opusdec) not installed")
def test_opus_8k_wideband_round_trip() -> None:
    x = speech()
    y = opus(8, 16000)(x)
    assert abs(len(y) - len(x)) < 1000  # opusdec drops the pre-skip: same length up to padding


def test_a_tokenizer_with_a_level_gets_each_piece_at_it_and_the_as_is_row_gets_it_unchanged(tmp_path: Path) -> None:
    cfg = TokenizerConfig(arch="vqvae", dims=1, sample_rate=16000, level_db=-20.0,
                          net=LevelConfig(channels=[8, 16], strides=[2, 2], res_depth=1, code_dim=4, codebook_size=16))
    tok = build_tokenizer(cfg)
    tok.train()(torch.randn(2, 1, 256))  # k-means codebook init
    (tmp_path / "run").mkdir()
    save_tokenizer(tok.eval(), tmp_path / "run" / "tokenizer.safetensors", train_info={"recipe": "t", "step": 0})
    at_level, as_is = tokenizer_codecs(str(tmp_path / "run"), 16000, as_is=True)
    assert (at_level.name, as_is.name) == ("vqtok run", "vqtok run (as is)")
    x = 0.1 * speech()
    gain = speech_level.gain_to(speech_level.level_db(x, 16000), -20.0)
    with torch.no_grad():
        for codec, g in ((at_level, gain), (as_is, 0.0)):
            codes = tok.encode(torch.from_numpy(speech_level.apply_gain(x, g))[None, None])
            out = tok.decode(codes, size=len(x))[0, 0].numpy() * 10 ** (-g / 20)
            np.testing.assert_allclose(codec.fn(x), out, rtol=1e-5, atol=1e-7)
            assert np.array_equal(codec.codes[-1][0], codes.numpy())
    assert 10 < gain < 30 and [c.name for c in tokenizer_codecs(str(tmp_path / "run"), 16000)] == ["vqtok run"]


def test_a_tokenizer_with_a_postfilter_decodes_through_it_and_the_raw_row_without(tmp_path: Path) -> None:
    cfg = TokenizerConfig(arch="vqvae", dims=1, sample_rate=16000, level_db=-20.0, postfilter=1.2,
                          net=LevelConfig(channels=[8, 16], strides=[2, 2], res_depth=1, code_dim=4, codebook_size=16))
    tok = build_tokenizer(cfg)
    tok.train()(torch.randn(2, 1, 256))  # k-means codebook init
    (tmp_path / "run").mkdir()
    save_tokenizer(tok.eval(), tmp_path / "run" / "tokenizer.safetensors", train_info={"recipe": "t", "step": 0})
    rows = tokenizer_codecs(str(tmp_path / "run"), 16000, as_is=True, raw=True)
    assert [c.name for c in rows] == ["vqtok run", "vqtok run (as is)", "vqtok run (no postfilter)"]
    main_row, _, raw_row = rows
    x = 0.1 * speech()
    wav, gain = tok.at_level(x)
    with torch.no_grad():
        y = tok.decode(tok.encode(wav[None, None]), size=len(x), postfilter=False)[0, 0]
    np.testing.assert_allclose(raw_row.fn(x), y.numpy() * 10 ** (-gain / 20), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(main_row.fn(x), sharpen(y, 16000, 1.2).numpy() * 10 ** (-gain / 20), rtol=1e-5,
                               atol=1e-7)
