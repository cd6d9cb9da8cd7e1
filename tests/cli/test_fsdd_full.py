"""Acceptance (slow): the whole FSDD folder encodes to a mirrored tree + manifest; decodes keep every length."""

import json

import pytest
import soundfile as sf
from clihelpers import SHARED_FSDD
from testdata import needs_corpus


@pytest.mark.slow
@needs_corpus  # all 2,500 recordings
def test_whole_fsdd_folder(tmp_path, audio_tok, cli):
    src = SHARED_FSDD.parent  # fsdd/ with recordings/ inside: the tree is mirrored
    out = tmp_path / "codes"
    res = cli("encode", src, "-m", audio_tok, "-o", out, "--labels", "fsdd", "--quiet", "--batch-size", "32")
    assert res.exit_code == 0, res.stderr
    entries = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    wavs = sorted(p.relative_to(src).as_posix() for p in src.rglob("*.wav"))
    assert len(entries) == len(wavs) == 2500
    assert [e["codes"] for e in entries] == [w[:-4] + ".npy" for w in wavs]
    assert all(e["label"] == int(e["codes"].split("/")[-1][0]) for e in entries)
    res = cli("decode", out, "-m", audio_tok, "-o", tmp_path / "dec")
    assert res.exit_code == 0, res.stderr
    for w in wavs:
        assert sf.info(tmp_path / "dec" / w).frames == sf.info(src / w).frames, w
