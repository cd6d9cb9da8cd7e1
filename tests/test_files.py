"""Files written through atomic_write get the mode a plain open() gives (umask), not mkstemp's 0600."""

import os
import stat

import numpy as np
import pytest
import torch

from vqtok.files import atomic_write, file_mode
from vqtok.tokenizer import LevelConfig, TokenizerConfig, build_tokenizer, save_tokenizer
from vqtok.tokenizer.codes import write_codes


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_written_tokenizer_and_codes_are_readable_by_others(tmp_path, umask_022):
    tok = build_tokenizer(TokenizerConfig(dims=2, net=LevelConfig(channels=[4], strides=[2], res_depth=1,
                                                                  code_dim=4, codebook_size=8))).eval()
    save_tokenizer(tok, tmp_path / "tok.safetensors")
    assert mode(tmp_path / "tok.safetensors") == 0o644
    codes = tok.encode(torch.rand(1, 8, 8))
    write_codes(tmp_path / "c.npy", codes, tok, {"kind": "image", "path": "x.png", "size": [8, 8]})
    assert mode(tmp_path / "c.npy") == 0o644
    assert mode(tmp_path / "c.npy.json") == 0o644


def test_atomic_write_follows_the_umask_and_leaves_nothing_on_error(tmp_path):
    old = os.umask(0o027)
    try:
        assert file_mode() == 0o640
        atomic_write(tmp_path / "a.txt", lambda tmp: np.save(open(tmp, "wb"), np.zeros(2)))
        assert mode(tmp_path / "a.txt") == 0o640
    finally:
        os.umask(old)
    with pytest.raises(RuntimeError):
        atomic_write(tmp_path / "b.txt", lambda tmp: (_ for _ in ()).throw(RuntimeError("boom")))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]
