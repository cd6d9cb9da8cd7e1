"""Quality of the shipped speech models stage by stage: the table on their docs pages, and a PNG of it.

    python bench/stage_curves.py [-o stages.png]

Each speech model's page (docs/models/NAME.md) has a table of its training stages (one to two hours of a CPU
core each) with the `bench/speech_codecs.py` figures on speech/test (columns STOI and PESQ-nb or PESQ-wb). This prints
them as one table per model with the shipped model's card figures last, and with -o draws PESQ and STOI against
the stage beside the classical codecs and the issue's bars measured on the same pieces.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from vqtok import registry  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
ROW = re.compile(r"^\|\s*(\d+)\s*\|")

# (docs page, shipped name, PESQ mode, anchors {codec: (STOI, PESQ)} from bench/speech_codecs.py on speech/test,
#  bar (STOI, PESQ) of the issue "Real-speech tokenizers")
MODELS = [
    ("speech-8k.md", "speech-8k", "nb", {"Codec 2 3200": (0.821, 2.68), "Opus 6": (0.851, 2.56)}, (0.86, 2.8)),
    ("speech-16k.md", "speech-16k", "wb", {"Opus 8": (0.931, 2.54), "Opus 6": (0.851, 1.79)}, (0.90, 2.6)),
]


def stages(page: Path) -> list[tuple[int, float, float]]:
    """(stage, STOI, PESQ) of every row "| N | ..." of the page's stage table (columns named STOI and PESQ-..)."""
    rows, columns = [], None
    for line in page.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if "stage" in cells and "STOI" in cells:
            columns = (cells.index("STOI"), next(i for i, c in enumerate(cells) if c.startswith("PESQ-")))
        elif columns and ROW.match(line):
            rows.append((int(cells[0]), float(cells[columns[0]]), float(cells[columns[1]])))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-o", "--out", type=Path, help="write the curves to this PNG")
    args = parser.parse_args()
    fig, axes = plt.subplots(2, 2, figsize=(11, 7), squeeze=False)
    for col, (page, name, mode, anchors, bar) in enumerate(MODELS):
        rows = stages(REPO / "docs" / "models" / page)
        shipped = registry.get(name).card.get("reported", {}) if name in registry.names() else {}
        print(f"\n{name} (stage figures from docs/models/{page}; last row: the shipped model's card)\n")
        print(f"| stage | STOI | PESQ-{mode} |\n|---:|---:|---:|")
        for stage, stoi, pesq in rows:
            print(f"| {stage} | {stoi:.3f} | {pesq:.2f} |")
        if shipped:
            print(f"| shipped | {shipped['stoi']:.3f} | {shipped[f'pesq_{mode}']:.2f} |")
        for row, (metric, index) in enumerate((("STOI", 1), (f"PESQ-{mode}", 2))):
            ax = axes[row][col]
            ax.plot([r[0] for r in rows], [r[index] for r in rows], "o-", label=f"{name} stages")
            if shipped:
                ax.plot([rows[-1][0]], [shipped["stoi" if index == 1 else f"pesq_{mode}"]], "r*", markersize=12,
                        label="shipped (at its level_db, with its postfilter)")
            for codec, figures in anchors.items():
                ax.axhline(figures[index - 1], linestyle="--", linewidth=1, color="gray")
                ax.annotate(codec, (1, figures[index - 1]), fontsize=8, color="gray", va="bottom")
            ax.axhline(bar[index - 1], linestyle=":", color="green", label="the issue's bar")
            low, high = ax.get_ylim()
            ax.set_ylim(low, max(high, bar[index - 1] + 0.05 * (high - low)))
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_xlabel("training stage (1-2 h of one CPU core each)")
            ax.set_ylabel(metric)
            ax.set_title(f"{name} on speech/test: {metric}")
            ax.legend(fontsize=8, loc="lower right")
    if args.out:
        fig.tight_layout()
        fig.savefig(args.out, dpi=100)
        print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
