"""Writing files safely: atomic replace with the permissions a plain open() gives, and JSON-lines appends."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: str | Path, write: Callable[[str], object]) -> None:
    """Call write(tmp_path) on a temporary file in the target folder, then rename it into place.

    A reader never sees a half-written file, and an error leaves the old file (or none) behind.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    os.close(fd)
    try:
        write(tmp)
        # mkstemp makes 0600, and some writers (safetensors) re-create the file: set the mode a plain
        # open() would give last, so files stay readable by other users of a shared machine.
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def file_mode() -> int:
    """0o666 less the process umask: what open(path, "w") creates."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def append_jsonl(path: str | Path, row: dict) -> None:
    """One JSON object per line; a line cut short by a crash is skipped by readers (plots.read_jsonl)."""
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")
