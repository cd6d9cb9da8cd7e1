"""bench/stage_curves.py: the stage table of a model page, and the shipped speech models' own."""

from pathlib import Path

from stage_curves import MODELS, REPO, stages


def test_stage_rows_are_read_and_other_lines_left(tmp_path: Path) -> None:
    page = tmp_path / "m.md"
    page.write_text("# m\n\n| codec | STOI | PESQ-nb |\n|---|---:|---:|\n| Opus 6 | 0.851 | 2.56 |\n\n"
                    "| stage | where | STOI | PESQ-wb | log-mel |\n|---:|---|---:|---:|---:|\n"
                    "| 1 | CPU | 0.751 | 1.71 | 0.3 |\n| 19 | H200 | 0.869 | 1.97 | 0.257 |\n\nText | 3 |\n")
    assert stages(page) == [(1, 0.751, 1.71), (19, 0.869, 1.97)]


def test_the_speech_recipes_list_their_stages_in_order() -> None:
    for recipe, *_ in MODELS:
        rows = stages(REPO / "docs" / "models" / recipe)
        numbers = [r[0] for r in rows]
        assert numbers[0] == 1 and numbers == sorted(set(numbers)) and len(rows) >= 10, recipe
