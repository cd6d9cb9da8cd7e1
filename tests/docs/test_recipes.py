"""Recipe headers: short (torchtune style), with the command, the CPU speed and what to expect; no stage diaries."""

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RECIPES = sorted((REPO / "recipes").glob("*.yaml"))


def header(path: Path) -> list[str]:
    lines = path.read_text().splitlines()
    return lines[:next(i for i, line in enumerate(lines) if not line.startswith("#"))]


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_header_is_short_and_says_how_to_run_it(path: Path) -> None:
    head = header(path)
    assert 1 <= len(head) <= 15, f"{path.name}: {len(head)} header lines"
    assert head[0].startswith(f"# {path.name}:")
    text = "\n".join(head)
    assert not re.search(r"\b20\d\d-\d\d|\bthis round\b", text), path.name  # no dated history: the model pages hold it
    if path.stem != "debug":
        assert "vqtok train recipes/" in text, path.name
        assert re.search(r"CPU.*steps/s", text, re.S), path.name  # how fast on a CPU (bench/gpu_check.sh reads it)
