"""bench/stage_curves.py: the stage lines of a recipe header, and the shipped recipes' own."""

from pathlib import Path

from stage_curves import MODELS, REPO, stages


def test_stage_lines_are_read_and_other_lines_left(tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text("# Quality:\n#   stage 1: STOI 0.751, PESQ-nb 1.71, SI-SNR 3.1 dB\n"
                      "#   stage 2 at level_db -24: STOI 0.9, PESQ-nb 3.0\n"
                      "#   stage 19: STOI 0.869, PESQ-wb 1.97 (PESQ-nb 2.41), log-mel 0.257\nname: r\n")
    assert stages(recipe) == [(1, 0.751, 1.71), (19, 0.869, 1.97)]


def test_the_speech_recipes_list_their_stages_in_order() -> None:
    for recipe, *_ in MODELS:
        rows = stages(REPO / "recipes" / recipe)
        numbers = [r[0] for r in rows]
        assert numbers[0] == 1 and numbers == sorted(set(numbers)) and len(rows) >= 10, recipe
