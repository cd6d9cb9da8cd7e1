"""Prior training: the frozen tokenizer encodes the data once (cached), then an explicit cross-entropy loop."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import torch
import yaml

from vqtok.device import autocast
from vqtok.errors import VqtokError
from vqtok.files import atomic_write
from vqtok.modality import modality_of
from vqtok.prior.checkpoint import PRIOR_FILES, load_prior, save_prior
from vqtok.prior.data import CodeSet, load_or_encode
from vqtok.prior.generate import sample_codes
from vqtok.prior.layout import LAYOUTS
from vqtok.prior.model import CodePrior
from vqtok.prior.recipe import PriorRecipe, load_prior_recipe
from vqtok.run import (RECIPE_FILE, STATE_FILE, Progress, StepBatches, Trainables, draw_curves, ignore_worker_deaths,
                       improved, load_state, save_state, set_rng_state, start_run, write_recipe)
from vqtok.tokenizer.base import level_names
from vqtok.tokenizer.checkpoint import TOKENIZER_FILE, load_tokenizer, tokenizer_file
from vqtok.tokenizer.codes import describe_tokenizer, tokenizer_summary

__all__ = ["load_prior_recipe", "train_prior", "resolve_tokenizer", "build_priors", "evaluate_priors"]

LN2 = math.log(2.0)


# ----------------------------------------------------------------------- set-up
def resolve_tokenizer(path: str | Path) -> Path:
    """A tokenizer file, or a run folder holding tokenizer.safetensors -> the file."""
    if not str(path):
        raise VqtokError("the recipe names no tokenizer; add tokenizer=RUN_OR_CHECKPOINT")
    path = tokenizer_file(path)
    if not path.is_file():
        raise VqtokError(f"{path}: no such tokenizer; pass tokenizer=RUN_FOLDER (or a .safetensors file)")
    return path


def level_indices(level: str, tok) -> list[int]:
    """Recipe `level` -> tokenizer level indices (top first)."""
    names = level_names(tok.levels)
    if level == "all":
        return list(range(tok.levels))
    if level not in names:
        raise VqtokError(f"level '{level}' does not exist in this {tok.levels}-level tokenizer; "
                         f"choose all or one of {', '.join(names)}")
    return [names.index(level)]


def build_priors(recipe: PriorRecipe, tok, train: CodeSet) -> dict[str, CodePrior]:
    """One CodePrior per trained level (top first), its layout read off the tokenizer and the codes."""
    names = level_names(tok.levels)
    model = recipe.model
    num_classes, counts = None, None
    if model.class_conditional:
        labels = train.labels
        if (labels < 0).any():
            raise VqtokError(f"model.class_conditional needs a label for every item; {int((labels < 0).sum())} "
                             f"of {len(labels)} in {recipe.data.root} have none (audio: data.rule fsdd)")
        num_classes = int(labels.max()) + 1
        counts = torch.bincount(labels, minlength=num_classes).tolist()
    priors = {}
    layout_class = LAYOUTS[tok.dims]  # maps or sequences, with their own checks of the recipe
    for index in level_indices(recipe.level, tok):
        bottom = names[index] == "bottom"
        layout = layout_class.from_codes(
            train.levels[index], train.lengths[index], codebooks=tok.codebooks, context=model.context,
            max_len=model.config.get("max_len", 1024),
            network=model.network, level=names[index], level_index=index, codebook_size=tok.codebook_size[index],
            cond_codebook_size=tok.codebook_size[0] if bottom else None,
            cond_ratio=tok.downsample[0] // tok.downsample[index] if bottom else None,
            num_classes=num_classes, class_counts=counts, cond_dropout=model.cond_dropout, guidance=model.guidance)
        priors[names[index]] = CodePrior(layout, dict(model.config))
    return priors


def level_loss(prior: CodePrior, batch: dict, device, whole: bool = False) -> tuple[torch.Tensor, torch.Tensor,
                                                                                  torch.Tensor]:
    """(NLL sum in nats, target count, EOS NLL sum) of one prior on a CodeSet batch; `whole`: sequences longer
    than the prior's window are read window by window (validation), else they come cut to one (training)."""
    index = prior.layout.level_index
    labels = batch["labels"].to(device) if prior.layout.num_classes else None
    codes, lengths = batch["codes"][index].to(device), batch["lengths"][index].to(device)
    if whole and prior.layout.window:
        return prior.windowed_nll(codes, lengths, labels)
    cond = batch["codes"][0].to(device) if prior.layout.level == "bottom" else None
    return prior.nll(codes, labels, cond, lengths)


# ---------------------------------------------------------------------- validation
@torch.no_grad()
def evaluate_priors(priors: dict[str, CodePrior], codes: CodeSet, tok, device, precision: str = "fp32",
                    batch_size: int = 64) -> dict[str, float]:
    """NLL over a whole CodeSet: nats and bits per code for each level, bits per image (maps) or per
    second of audio for all levels together. For sequences with EOS, per-code figures leave the EOS
    targets out; bits per second count them (they are part of the description of a clip)."""
    sums = {name: [0.0, 0, 0.0] for name in priors}  # nll, targets, eos nll
    for prior in priors.values():
        prior.eval()
    for start in range(0, len(codes), batch_size):
        batch = codes.batch(list(range(start, min(start + batch_size, len(codes)))))
        for name, prior in priors.items():
            with autocast(device, precision):
                nll, count, eos = level_loss(prior, batch, device, whole=True)
            sums[name][0] += float(nll)
            sums[name][1] += int(count)
            sums[name][2] += float(eos)
    metrics: dict[str, float] = {}
    total_bits = 0.0
    for name, (nll, count, eos) in sums.items():
        suffix = "" if name == "codes" else f"_{name}"
        items = len(codes) if priors[name].layout.eos else 0  # one EOS target per item
        per_code = (nll - eos) / max(count - items, 1)
        metrics[f"nll{suffix}"] = per_code
        metrics[f"bits_per_code{suffix}"] = per_code / LN2
        total_bits += nll / LN2
    metrics |= modality_of(tok.config).prior_rates(tok, total_bits, len(codes), float(codes.sizes.sum()))
    for prior in priors.values():
        prior.train()
    return metrics


def write_samples(folder: Path, step: int, priors: dict[str, CodePrior], tok, n: int, seed: int) -> None:
    """Draw n samples (fixed seed: comparable across steps), decode and write them as their modality does (a PNG
    grid, WAV files)."""
    if n <= 0 or len(priors) != tok.levels:  # one level of a VQ-VAE-2 alone cannot be decoded
        return
    ordered = [priors[name] for name in level_names(tok.levels)]
    gen = torch.Generator().manual_seed(seed)
    first = ordered[0]
    labels = None
    if first.layout.num_classes:  # classes in turn, so a grid row shows them all
        labels = torch.arange(n) % first.layout.num_classes
    levels = sample_codes(ordered, n, labels, generator=gen)
    modality_of(tok.config).write_step_samples(folder, step, tok, levels, labels, first.layout.num_classes)
    for prior in ordered:
        prior.train()


# -------------------------------------------------------------------- checkpoints
def save_priors(run: Path, priors: dict[str, CodePrior], tok_summary: dict, tok_path: Path, step: int,
                recipe: PriorRecipe, best: dict) -> None:
    """Each level's prior (safetensors, loadable alone), with the run's step and best validation NLL."""
    info = {"recipe": recipe.name, "step": step, "tokenizer_path": str(tok_path.resolve()), **best}
    for name, prior in priors.items():
        save_prior(prior, run / PRIOR_FILES[name], tok_summary, info)


def tokenizer_for(recipe: PriorRecipe, run: Path, resume: bool) -> Path:
    """The tokenizer file to use. A resumed run uses its own copy, unless `tokenizer=` names another file
    than its recipe.yaml does (that one is then checked against the copy, and refused if it differs)."""
    if not resume:
        return resolve_tokenizer(recipe.tokenizer)
    copy = run / TOKENIZER_FILE
    stored = yaml.safe_load((run / RECIPE_FILE).read_text()) if (run / RECIPE_FILE).is_file() else {}
    if copy.is_file() and recipe.tokenizer == (stored or {}).get("tokenizer"):
        return copy
    return resolve_tokenizer(recipe.tokenizer)


def snapshot_tokenizer(tok_path: Path, tok, run: Path, resume: bool) -> Path:
    """Keep a copy of the tokenizer in the run folder, so the run stays usable when the tokenizer's own run
    goes on training (and overwrites its file). On resume, a different tokenizer is refused."""
    copy = run / TOKENIZER_FILE
    if resume:
        if copy.is_file():
            kept = load_tokenizer(copy)
            if kept.fingerprint != tok.fingerprint:
                raise VqtokError(
                    f"{run}: this run models {describe_tokenizer(tokenizer_summary(kept))}, but tokenizer={tok_path} "
                    f"is {describe_tokenizer(tokenizer_summary(tok))}; resume with the run's own tokenizer "
                    f"(tokenizer={copy}) or start a new run")
        return copy
    if copy.resolve() != tok_path.resolve():
        atomic_write(copy, lambda tmp: shutil.copyfile(tok_path, tmp))
    return copy


# ------------------------------------------------------------------------ the loop
def train_prior(recipe: PriorRecipe, run: Path, resume: bool = False, stop_after: int | None = None,
                progress: bool = True, plot: bool = True) -> dict[str, CodePrior]:
    """Train the prior(s) of `recipe` into folder `run`; returns them by level name (eval mode).

    `resume` continues from run/state.pt with the run's own tokenizer; `stop_after` ends after that many steps
    as an interruption would (the schedule still spans max_steps); `plot` draws RUN/curves.png at the end.
    """
    run = Path(run)
    cfg = recipe.train
    device = start_run(cfg)
    run.mkdir(parents=True, exist_ok=True)

    # The frozen tokenizer and its codes (encoded once, cached under data.cache or RUN/codes)
    tok_path = tokenizer_for(recipe, run, resume)
    tok = load_tokenizer(tok_path, device)
    for p in tok.parameters():
        p.requires_grad_(False)
    snapshot_tokenizer(tok_path, tok, run, resume)
    write_recipe(run, recipe)
    tok_summary = tokenizer_summary(tok)
    cache = Path(recipe.data.cache) if recipe.data.cache else run / "codes"
    train_set, _ = load_or_encode(tok, recipe.data, "train", cache, progress)
    valid_set, _ = load_or_encode(tok, recipe.data, "test", cache, progress)

    # Priors (one per level, one optimizer over all of them), schedule
    priors = build_priors(recipe, tok, train_set)
    for prior in priors.values():
        prior.tokenizer = tok_summary
        prior.to(device).train()
    trainables = Trainables()
    main = trainables.add("main", [p for prior in priors.values() for p in prior.parameters()], cfg)
    start, best, state = 0, {}, None
    if resume:
        state = load_state(run)
        for name, prior in priors.items():
            prior.load_state_dict(load_prior(run / PRIOR_FILES[name], tokenizer=tok).state_dict())
        trainables.load_state_dict(state)
        start, best = int(state["step"]), dict(state.get("best", {}))
    stop = cfg.max_steps if stop_after is None else min(cfg.max_steps, stop_after)
    windows = [None] * tok.levels  # per level: (window, align) of the training cuts, or None
    for prior in priors.values():
        if prior.layout.window:
            windows[prior.layout.level_index] = (prior.layout.window, prior.layout.codebooks)
    batches = StepBatches(len(train_set), cfg.batch_size, cfg.seed, start, stop)
    if state is not None:
        set_rng_state(state["rng"])

    def save(step: int) -> None:
        save_priors(run, priors, tok_summary, tok_path, step, recipe, best)
        save_state(run, step, trainables, best)

    step = start
    with Progress(run, cfg, recipe.name, start, stop, progress) as log:
        log.write(f"{recipe.name}: {', '.join(priors)} prior(s), {sum(p.numel() for p in main.params) / 1e6:.2f}M "
                  f"parameters, over {describe_tokenizer(tok_summary)}; {len(train_set)} training and "
                  f"{len(valid_set)} validation items")
        try:
            for index in batches:
                batch = train_set.batch(index, windows)
                loss, row = 0.0, {}
                for name, prior in priors.items():
                    with autocast(device, cfg.precision):
                        nll, count, _ = level_loss(prior, batch, device)
                    level_nll = nll / count  # mean nats per target
                    loss = loss + level_nll
                    row["nll" if name == "codes" else f"nll_{name}"] = level_nll.detach()
                grad_norm = main.step(loss)
                step += 1

                log.train(step, {"loss": loss.detach(), **row, "grad_norm": grad_norm.detach()}, main.lr)
                if step % cfg.valid_every == 0 or step == cfg.max_steps:
                    metrics = evaluate_priors(priors, valid_set, tok, device)  # fp32: exact whatever trains
                    best = improved(best, metrics, next(k for k in metrics if k.startswith("nll")), step)
                    log.valid(step, metrics)
                    write_samples(run / "samples", step, priors, tok, recipe.samples, cfg.seed)
                if log.due(step, cfg.save_every):
                    save(step)
        except KeyboardInterrupt:
            log.write(f"interrupted at step {step}: saving the prior(s) and {STATE_FILE} in {run}")
            ignore_worker_deaths()
            save(step)
            raise
    if plot:
        draw_curves(run)
    return {name: prior.eval() for name, prior in priors.items()}
