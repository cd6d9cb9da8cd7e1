"""The documentation site builds with `mkdocs build --strict` (every nav page present, every link resolved)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


def nav_pages(nav) -> list[str]:
    pages = []
    for item in nav:
        for value in item.values():
            pages += nav_pages(value) if isinstance(value, list) else [value]
    return pages


def test_every_nav_page_exists_and_every_model_has_one() -> None:
    config = yaml.safe_load((REPO / "mkdocs.yml").read_text())
    pages = nav_pages(config["nav"])
    assert [p for p in pages if not (REPO / "docs" / p).is_file()] == []
    shipped = sorted(p.stem for p in (REPO / "vqtok" / "pretrained").glob("*.safetensors"))
    assert shipped and [n for n in shipped if f"models/{n}.md" not in pages] == []


def test_mkdocs_build_strict(tmp_path: Path) -> None:
    pytest.importorskip("mkdocs", reason="the site needs the docs extra (pip install -e '.[docs]')")
    pytest.importorskip("mkdocstrings", reason="the site needs the docs extra (pip install -e '.[docs]')")
    site = tmp_path / "site"
    res = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
                         cwd=REPO, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert res.returncode == 0, res.stderr[-3000:]
    cli = (site / "cli" / "index.html").read_text()
    assert all(f"vqtok {name}" in cli for name in ("train", "encode", "decode", "compress", "models"))
    assert "load_tokenizer" in (site / "api" / "index.html").read_text()
    assert (site / "models" / "speech-16k" / "index.html").is_file()

