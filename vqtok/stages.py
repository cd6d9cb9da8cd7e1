"""Staged recipes: a tokenizer recipe's `stages:` list, replayed stage after stage, each from the one before.

    stages:
      - {steps: 2000, where: "CPU", overrides: [train.lr=1e-3]}
      - {steps: 4000, where: "H200 GPU, batch 32 x 1 s"}
      - {steps: 4500, freeze: encoder}        # the decoder alone: encoder and codebook frozen, codes kept

Each stage trains the recipe (without its `stages`) with the stage's overrides on top of the command line's and
`train.max_steps` set to its `steps`, in RUN/stage-NN/, an ordinary run folder (tokenizer, state, metrics, curves).
Stage N+1 starts `--init-from` stage N's tokenizer (`init: none` starts it afresh, as a distillation stage that
names the previous stage as its teacher: `loss.teacher={previous}`; `{previous}` in an override is the previous
stage's tokenizer file). The first stage starts from the recipe's own initialisation, or from `--init-from`.
`where` and `note` are for the reader: the plan (`vqtok train RECIPE --dry-run`) prints them. `stages=null` on the
command line trains the recipe once, as it stands.

RUN/stages.yaml keeps the recipe as run (overrides applied), so `vqtok train --resume RUN` finds it: finished stages
are skipped, an interrupted one resumes exactly (its state.pt), the rest follow. RUN/tokenizer.safetensors is the
last finished stage's, and RUN/metrics.jsonl joins the stages' logs on one step axis for `vqtok plot RUN`.
"""

from __future__ import annotations

import copy
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from vqtok.config import apply_overrides, from_dict, load_yaml
from vqtok.errors import VqtokError
from vqtok.files import atomic_write
from vqtok.run import METRICS_FILE, RECIPE_FILE, STATE_FILE, load_state
from vqtok.tokenizer.checkpoint import TOKENIZER_FILE
from vqtok.tokenizer.recipe import load_recipe, without_stages
from vqtok.tokenizer.train import train_tokenizer

STAGES_FILE = "stages.yaml"  # the staged recipe as run, in the run folder
BASE_FILE = "base.yaml"  # the same without its stages: what each stage's overrides apply to
PREVIOUS = "{previous}"
FREEZE = {"encoder": ["loss.decoder_only=true"]}  # what a stage may keep frozen -> the overrides that do it


@dataclass
class Stage:
    """One stage of a staged recipe (see the module doc)."""

    steps: int
    overrides: list[str] = field(default_factory=list)
    freeze: str | None = None  # "encoder": the decoder alone
    init: str = "previous"  # "previous": --init-from the stage before; "none": the recipe's own initialisation
    where: str = ""
    note: str = ""

    def settings(self, previous: Path | None) -> list[str]:
        """The stage's key=value overrides, `{previous}` filled in."""
        items = [*self.overrides, *FREEZE.get(self.freeze or "", []), f"train.max_steps={self.steps}"]
        if any(PREVIOUS in item for item in items) and previous is None:
            raise VqtokError(f"an override names {PREVIOUS}, but this stage has no stage before it")
        return [item.replace(PREVIOUS, str(previous)) for item in items]


def parse_stages(data: dict, where: str | Path, overrides: list[str] | None = None) -> tuple[dict, list[Stage]]:
    """(the recipe with overrides applied, its stages) from a staged recipe's parsed YAML `data`, every stage
    checked strictly. The stages are the file's: overrides apply to the recipe they train."""
    stages_raw = data.get("stages") or []
    stages = []
    for i, item in enumerate(stages_raw, 1):
        if not isinstance(item, dict):
            raise VqtokError(f"{where}: stage {i} is not a mapping (steps, overrides, freeze, init, where, note)")
        try:
            stage = from_dict(Stage, item)
        except VqtokError as err:
            raise VqtokError(f"{where}: stage {i}: {err}") from None
        if stage.freeze is not None and stage.freeze not in FREEZE:
            raise VqtokError(f"{where}: stage {i}: freeze '{stage.freeze}'; choose one of {', '.join(FREEZE)}")
        if stage.init not in ("previous", "none"):
            raise VqtokError(f"{where}: stage {i}: init '{stage.init}'; choose previous or none")
        if stage.steps < 1:
            raise VqtokError(f"{where}: stage {i}: steps must be at least 1, got {stage.steps}")
        stages.append(stage)
    if not stages:
        raise VqtokError(f"{where}: no stages; a staged recipe lists them under `stages:`")
    full = without_stages(apply_overrides(copy.deepcopy(data), list(overrides or [])), where)  # the task checked
    return {**full, "stages": stages_raw}, stages


def read_stages(path: str | Path, overrides: list[str] | None = None) -> tuple[dict, list[Stage]]:
    """`parse_stages` of a recipe file."""
    return parse_stages(load_yaml(path), path, overrides)


def format_plan(stages: list[Stage], init_from: str | None = None) -> str:
    """One line per stage: where it runs, its steps, what it starts from, its settings."""
    lines = []
    for i, stage in enumerate(stages, 1):
        start = (("--init-from " + init_from if init_from else "the recipe's initialisation")
                 if i == 1 or stage.init == "none" else f"stage {i - 1}")
        where = f" [{stage.where}]" if stage.where else ""
        what = " ".join(stage.settings(Path(f"stage-{i - 1:02d}") / TOKENIZER_FILE if i > 1 else None))
        note = f"  # {stage.note}" if stage.note else ""
        lines.append(f"stage {i}{where}: {stage.steps:,} steps from {start}: {what}{note}")
    return "\n".join(lines)


def stage_dir(run: Path, i: int) -> Path:
    return run / f"stage-{i:02d}"


def finished(folder: Path, steps: int) -> bool:
    """The stage's run folder holds a state at its last step."""
    return (folder / STATE_FILE).is_file() and int(load_state(folder)["step"]) >= steps


def train_stages(recipe_path: str | Path, run: Path, overrides: list[str] | None = None, resume: bool = False,
                 only: int | None = None, init_from: str | None = None, progress: bool = True,
                 echo: Callable[[str], object] = print, parsed: dict | None = None) -> Path:
    """Run a staged recipe's stages in RUN (all, or stage `only`); returns the last finished stage's tokenizer.

    With `resume`, RUN/stages.yaml is the recipe: finished stages are skipped and an interrupted one resumes.
    `parsed`: that file's YAML, when the caller has read it already (`vqtok train` reads a recipe once).
    """
    run = Path(run)
    source = run / STAGES_FILE if resume else Path(recipe_path)
    if resume and not source.is_file():
        raise VqtokError(f"{run}: no {STAGES_FILE}; it is not a staged run (resume it without stages)")
    data, stages = parse_stages(load_yaml(source) if parsed is None else parsed, source,
                                None if resume else overrides)
    if resume and overrides:
        raise VqtokError(f"{run}: a staged run resumes with the settings it started with; give no overrides")
    if only is not None and not 1 <= only <= len(stages):
        raise VqtokError(f"--stage {only}: the recipe has stages 1-{len(stages)}")
    if not resume:
        if (run / STAGES_FILE).exists():
            raise VqtokError(f"{run}: already holds a staged run; continue it with --resume or choose another --out")
        run.mkdir(parents=True, exist_ok=True)
        atomic_write(run / STAGES_FILE, lambda tmp: Path(tmp).write_text(yaml.safe_dump(data, sort_keys=False)))
        base = {k: v for k, v in data.items() if k != "stages"}
        atomic_write(run / BASE_FILE, lambda tmp: Path(tmp).write_text(yaml.safe_dump(base, sort_keys=False)))
    last = None
    for i, stage in enumerate(stages, 1):
        folder, previous = stage_dir(run, i), stage_dir(run, i - 1) / TOKENIZER_FILE if i > 1 else None
        if only is not None and i != only:
            last = folder / TOKENIZER_FILE if finished(folder, stage.steps) else last
            continue
        if finished(folder, stage.steps):
            echo(f"stage {i}/{len(stages)}: done ({folder})")
        elif (folder / STATE_FILE).is_file():
            echo(f"stage {i}/{len(stages)}: resuming {folder}")
            train_tokenizer(load_recipe(folder / RECIPE_FILE), folder, resume=True, progress=progress)
        else:
            if previous is not None and not finished(previous.parent, stages[i - 2].steps):
                raise VqtokError(f"stage {i} starts from stage {i - 1}, which has not finished in {previous.parent}; "
                                 f"run it first (--stage {i - 1})")
            start = (init_from if i == 1 else None) if i == 1 or stage.init == "none" else str(previous)
            echo(f"stage {i}/{len(stages)}{' [' + stage.where + ']' if stage.where else ''}: {stage.steps} steps"
                 + (f" from {start}" if start else ""))
            recipe = load_recipe(run / BASE_FILE, stage.settings(previous))
            train_tokenizer(recipe, folder, init_from=start, progress=progress)
        last = folder / TOKENIZER_FILE
        shutil.copyfile(last, run / TOKENIZER_FILE)
        join_metrics(run, len(stages))
    if last is None:
        raise VqtokError(f"{run}: no stage has finished")
    return last


def join_metrics(run: Path, count: int) -> None:
    """RUN/metrics.jsonl: every stage's log lines, their steps counted on from the stages before, with `stage`."""
    lines, offset = [], 0
    for i in range(1, count + 1):
        path = stage_dir(run, i) / METRICS_FILE
        if not path.is_file():
            break
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        lines += [json.dumps({**row, "step": row["step"] + offset, "stage": i}) for row in rows]
        offset += max((row["step"] for row in rows), default=0)
    atomic_write(run / METRICS_FILE, lambda tmp: Path(tmp).write_text("".join(f"{line}\n" for line in lines)))
