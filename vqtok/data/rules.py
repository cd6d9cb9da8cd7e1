"""Label and split rules: a file's key (its path relative to the data root, POSIX) -> (label, split), by name.

Audio folders, image folders and token datasets read their labels and train/test splits through these
(`data.rule` in a recipe, `vqtok encode --labels`); no torch and no file I/O here.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from pathlib import Path

from vqtok.errors import VqtokError

TEST_FRACTION = 0.05


def hash_split(key: str, test_fraction: float = TEST_FRACTION) -> str:
    """``"test"`` for a stable ``test_fraction`` of keys, else ``"train"``.

    hashlib, not ``hash()``: Python salts string hashes per process, which would reshuffle the split.
    """
    h = int.from_bytes(hashlib.sha1(key.encode("utf-8")).digest()[:8], "big")
    return "test" if h < test_fraction * 2**64 else "train"


# Label and split rules: (path relative to the root, POSIX) -> (label, split); label -1 means none.
# A rule raises ValueError for a file it cannot place; the folder then warns and skips that file.
Rule = Callable[[str], tuple[int, str]]

_FSDD_NAME = re.compile(r"^(\d)_(.+)_(\d+)$")


def fsdd_rule(key: str) -> tuple[int, str]:
    """Free Spoken Digit Dataset ``{digit}_{speaker}_{take}.wav``: label = digit; takes 0-4 are the test split.

    That is the split FSDD's README prescribes, so results compare with published ones.
    """
    match = _FSDD_NAME.match(Path(key).stem)
    if match is None:
        raise ValueError("name is not {digit}_{speaker}_{take}.wav")
    digit, _speaker, take = match.groups()
    return int(digit), "test" if int(take) < 5 else "train"


# The FSDD speaker that the digit tokenizer never hears (rule ``fsdd_speaker``): its takes are the test split.
FSDD_HELDOUT_SPEAKER = "nicolas"


def fsdd_speaker_rule(key: str) -> tuple[int, str]:
    """FSDD names, split by speaker: every take of ``FSDD_HELDOUT_SPEAKER`` is test; the other speakers'
    training takes (5-49) are train, and their test takes (0-4) are in neither split ("unused").

    Validation then measures a voice the tokenizer has not heard, as a user's own audio would be, and the
    FSDD test takes that the priors are scored on stay unheard by the tokenizer too.
    """
    digit, split = fsdd_rule(key)
    speaker = _FSDD_NAME.match(Path(key).stem).group(2)
    if speaker == FSDD_HELDOUT_SPEAKER:
        return digit, "test"
    return digit, "unused" if split == "test" else "train"


def folders_rule(key: str) -> tuple[int, str]:
    """No labels; the first folder of the path names the split: ``train/...`` or ``test/...``."""
    top = key.split("/", 1)[0]
    if "/" not in key or top not in ("train", "test"):
        raise ValueError("path does not start with a train/ or test/ folder")
    return -1, top


def hash_rule(key: str) -> tuple[int, str]:
    """No labels; about 5% of files go to the test split, chosen by a stable hash of the relative path."""
    return -1, hash_split(key)


RULES: dict[str, Rule] = {"fsdd": fsdd_rule, "fsdd_speaker": fsdd_speaker_rule, "folders": folders_rule,
                          "hash": hash_rule}
RULE_NUM_CLASSES: dict[str, int | None] = {"fsdd": 10, "fsdd_speaker": 10, "folders": None, "hash": None}


def get_rule(name: str | None) -> Rule:
    """The rule called ``name`` (None means ``"hash"``)."""
    name = "hash" if name is None else name
    if name not in RULES:
        raise VqtokError(f"unknown audio rule {name!r}; choose one of {', '.join(RULES)}")
    return RULES[name]
