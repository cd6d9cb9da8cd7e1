"""The documentation site builds with `mkdocs build --strict` (every nav page present, every link resolved)."""

from pathlib import Path

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


def test_mkdocs_build_strict(built_site: Path) -> None:
    cli = (built_site / "cli" / "index.html").read_text()
    assert all(f"vqtok {name}" in cli for name in ("train", "encode", "decode", "compress", "models"))
    assert "load_tokenizer" in (built_site / "api" / "index.html").read_text()
    assert (built_site / "models" / "speech-16k" / "index.html").is_file()
