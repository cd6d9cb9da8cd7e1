"""`vqtok train RECIPE [key.sub=value ...]`: train a tokenizer (or a prior) from a YAML recipe."""

from __future__ import annotations

import copy
from pathlib import Path

import click

from vqtok.cli.common import friendly_errors, setup_logging
from vqtok.errors import VqtokError


def default_run_dir(name: str) -> Path:
    """runs/NAME, or runs/NAME-2, -3, ... when it already holds a run."""
    base = Path("runs") / name
    if not base.exists():
        return base
    i = 2
    while (base.parent / f"{name}-{i}").exists():
        i += 1
    return base.parent / f"{name}-{i}"


@click.command("train", context_settings={"ignore_unknown_options": False})
@click.argument("args", nargs=-1)
@click.option("--out", "out", type=click.Path(file_okay=False), help="Run folder (default: runs/NAME).")
@click.option("--resume", "resume", type=click.Path(file_okay=False), help="Continue the run in this folder.")
@click.option("--init-from", "init_from", type=click.Path(dir_okay=False),
              help="Start from this tokenizer's weights and codebook (fine-tune): its architecture, the "
                   "recipe's training and quantizer settings (EMA decay, dead_ratio, ...).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--stage", "stage", type=int, help="A staged recipe: run only this stage (1 = the first).")
@click.option("--dry-run", is_flag=True, help="A staged recipe: print its stages and their settings, train nothing.")
@friendly_errors
def command(args: tuple[str, ...], out: str | None, resume: str | None, init_from: str | None, quiet: bool,
            stage: int | None, dry_run: bool) -> None:
    """Train from RECIPE (a YAML file), with optional key.sub=value overrides.

    \b
    Examples:
      vqtok train recipes/mnist.yaml data.root=../shared/data/mnist
      vqtok train recipes/speech.yaml data.root=~/audio train.max_steps=2000 --out runs/my-speech
      vqtok train --resume runs/my-speech train.max_steps=4000
      torchrun --nproc_per_node=2 -m vqtok train recipes/speech.yaml
      vqtok train recipes/speech16k.yaml --dry-run          # a staged recipe's plan (vqtok/stages.py)
      vqtok train --resume runs/speech16k --stage 3
    """
    from vqtok.run import RECIPE_FILE

    setup_logging()
    overrides = [a for a in args if "=" in a]
    paths = [a for a in args if "=" not in a]
    if len(paths) > 1:
        raise VqtokError(f"expected one recipe file, got {', '.join(paths)}")
    if resume:
        run = Path(resume)
        recipe_path = run / RECIPE_FILE
        if paths:
            raise VqtokError("--resume takes the recipe from the run folder; give only key=value overrides")
    else:
        if not paths:
            raise VqtokError("give a recipe file, e.g. vqtok train recipes/mnist.yaml")
        recipe_path = Path(paths[0])
    from vqtok.config import apply_overrides, load_yaml
    from vqtok.stages import STAGES_FILE, format_plan, parse_stages, train_stages
    from vqtok.tokenizer.recipe import parse_recipe, without_stages

    staged = Path(resume, STAGES_FILE) if resume and Path(resume, STAGES_FILE).is_file() else None
    source = staged or recipe_path
    text = load_yaml(source)  # the one read of the recipe: everything below dispatches on it
    raw = apply_overrides(copy.deepcopy(text), overrides)
    if raw.get("task") == "latent_level":  # its stages are its own (tokenizer/train_latent.py)
        from vqtok.tokenizer.train_latent import load_latent_recipe, train_latent_level

        if stage is not None or dry_run:
            raise VqtokError("a latent_level recipe names the tokenizer it stacks on as `base` and runs its stages "
                             "in order; --stage and --dry-run do not apply")
        recipe = load_latent_recipe(raw | ({"init": init_from} if init_from else {}))
        run = Path(resume) if resume else Path(out) if out else default_run_dir(recipe.name)
        train_latent_level(recipe, run, resume=bool(resume), progress=not quiet)
        click.echo(f"done: {run}")
        return
    if staged or (not resume and raw.get("stages")):  # `stages=null` on the command line trains it once
        if dry_run:
            click.echo(format_plan(parse_stages(text, source, overrides)[1], init_from))
            return
        run = Path(resume) if resume else Path(out) if out else default_run_dir(without_stages(text, source)["name"])
        train_stages(recipe_path, run, overrides, bool(resume), stage, init_from, not quiet,
                     lambda line: click.echo(line, err=True), parsed=text)
        click.echo(f"done: {run}")
        return
    if stage is not None or dry_run:
        raise VqtokError(f"{recipe_path}: --stage and --dry-run need a staged recipe (a `stages:` list)")
    data = without_stages(raw, recipe_path)
    if data.get("task", "tokenizer") == "prior":
        from vqtok.prior.recipe import parse_prior_recipe
        from vqtok.prior.train import train_prior

        if init_from:
            raise VqtokError("--init-from starts a tokenizer from another's weights; a prior recipe cannot take it "
                             "(name the tokenizer with tokenizer=RUN, or continue a prior run with --resume)")
        recipe = parse_prior_recipe(data, recipe_path)
        run = Path(resume) if resume else Path(out) if out else default_run_dir(recipe.name)
        train_prior(recipe, run, resume=bool(resume), progress=not quiet)
    else:
        from vqtok.tokenizer.train import train_tokenizer

        recipe = parse_recipe(data, recipe_path)
        run = Path(resume) if resume else Path(out) if out else default_run_dir(recipe.name)
        train_tokenizer(recipe, run, resume=bool(resume), init_from=init_from, progress=not quiet)
    click.echo(f"done: {run}")
