"""Prior training: the frozen tokenizer encodes the data once (cached), then an explicit cross-entropy loop."""

from __future__ import annotations

import math
import random
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from tqdm import tqdm

from vqtok.config import to_dict
from vqtok.device import autocast, pick_device
from vqtok.errors import VqtokError
from vqtok.prior.checkpoint import PRIOR_FILES, load_prior, save_prior
from vqtok.prior.data import CodeSet, load_or_encode
from vqtok.data.audio import write_wav
from vqtok.prior.generate import decode_codes, sample_codes
from vqtok.prior.model import CodePrior, PriorLayout
from vqtok.prior.recipe import PriorRecipe, load_prior_recipe
from vqtok.files import atomic_write
from vqtok.tokenizer.checkpoint import TOKENIZER_FILE, load_tokenizer, tokenizer_file
from vqtok.tokenizer.codes import LEVEL_NAMES, describe_tokenizer, tokenizer_summary
from vqtok.train import METRICS_FILE, RECIPE_FILE, STATE_FILE, StepBatches, _append_jsonl, format_line, lr_lambda
from vqtok.train import draw_curves, load_state, rng_state, set_rng_state, sigterm_stops_like_ctrl_c

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
    names = LEVEL_NAMES[tok.levels]
    if level == "all":
        return list(range(tok.levels))
    if level not in names:
        raise VqtokError(f"level '{level}' does not exist in this {tok.levels}-level tokenizer; "
                         f"choose all or one of {', '.join(names)}")
    return [names.index(level)]


def build_priors(recipe: PriorRecipe, tok, train: CodeSet) -> dict[str, CodePrior]:
    """One CodePrior per trained level (top first), its layout read off the tokenizer and the codes."""
    names = LEVEL_NAMES[tok.levels]
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
    for index in level_indices(recipe.level, tok):
        bottom = names[index] == "bottom"
        if tok.dims == 2 and bottom and model.kind != "pixelcnn":
            raise VqtokError("a VQ-VAE-2 bottom prior over 2-D maps is conditioned spatially on the top map: "
                             "use model.kind pixelcnn")
        if tok.dims == 1 and model.kind != "transformer":
            raise VqtokError("audio codes are sequences of natural lengths: use model.kind transformer")
        codes = train.levels[index]
        layout = PriorLayout(
            kind=model.kind, level=names[index], level_index=index, codebook_size=tok.codebook_size[index],
            dims=tok.dims, shape=list(codes.shape[1:]) if tok.dims == 2 else None,
            eos=tok.dims == 1 and not bottom,
            cond_codebook_size=tok.codebook_size[0] if bottom else None,
            cond_ratio=tok.downsample[0] // tok.downsample[index] if bottom else None,
            num_classes=num_classes, class_counts=counts,
            max_length=int(train.lengths[index].max()) if tok.dims == 1 else None,
        )
        if layout.eos:
            need = layout.max_length + 1  # the longest sequence and its EOS
            max_len = model.config.get("max_len", 1024)
            if need > max_len:
                raise VqtokError(f"the longest training sequence needs {need} positions (codes + EOS), more than "
                                 f"model.config.max_len={max_len}; raise it")
        priors[names[index]] = CodePrior(layout, dict(model.config))
    return priors


def level_loss(prior: CodePrior, batch: dict, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(NLL sum in nats, target count, EOS NLL sum) of one prior on a CodeSet batch."""
    index = prior.layout.level_index
    labels = batch["labels"].to(device) if prior.layout.num_classes else None
    cond = batch["codes"][0].to(device) if prior.layout.level == "bottom" else None
    return prior.nll(batch["codes"][index].to(device), labels, cond, batch["lengths"][index].to(device))


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
                nll, count, eos = level_loss(prior, batch, device)
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
    if tok.dims == 2:
        metrics["bits_per_image"] = total_bits / len(codes)
    else:
        seconds = float(codes.sizes.sum()) / tok.sample_rate
        metrics["bits_per_second"] = total_bits / seconds
    for prior in priors.values():
        prior.train()
    return metrics


def write_samples(folder: Path, step: int, priors: dict[str, CodePrior], tok, n: int, seed: int) -> None:
    """Draw n samples (fixed seed: comparable across steps) and decode them: a PNG grid or WAV files."""
    if n <= 0 or len(priors) != tok.levels:  # one level of a VQ-VAE-2 alone cannot be decoded
        return
    ordered = [priors[name] for name in LEVEL_NAMES[tok.levels]]
    gen = torch.Generator().manual_seed(seed)
    first = ordered[0]
    labels = None
    if first.layout.num_classes:  # classes in turn, so a grid row shows them all
        labels = torch.arange(n) % first.layout.num_classes
    levels = sample_codes(ordered, n, labels, generator=gen)
    out = decode_codes(tok, levels)
    folder.mkdir(parents=True, exist_ok=True)
    if tok.dims == 2:
        from vqtok.plots import image_grid, save_png

        save_png(image_grid(out, nrow=first.layout.num_classes or 8), folder / f"step{step:07d}.png")
    else:
        from vqtok.plots import save_spectrograms

        titles = []
        for i, wave in enumerate(out[:8]):
            tag = f"_label{int(labels[i])}" if labels is not None else ""
            write_wav(folder / f"step{step:07d}_{i}{tag}.wav", wave, tok.sample_rate)
            titles.append(f"sample {i}" + (f", label {int(labels[i])}" if labels is not None else ""))
        save_spectrograms(list(out[:8]), tok.sample_rate, titles, folder / f"step{step:07d}.png")
    for prior in ordered:
        prior.train()


# -------------------------------------------------------------------- checkpoints
def save_run(run: Path, priors: dict[str, CodePrior], tok_summary: dict, tok_path: Path, opt, sched, step: int,
             recipe: PriorRecipe, best: dict) -> None:
    """Each level's prior (safetensors, loadable alone) + the training state of all of them (torch.save)."""
    info = {"recipe": recipe.name, "step": step, "tokenizer_path": str(tok_path.resolve()), **best}
    for name, prior in priors.items():
        save_prior(prior, run / PRIOR_FILES[name], tok_summary, info)
    state = {"step": step, "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "rng": rng_state(),
             "best": best}
    atomic_write(run / STATE_FILE, lambda tmp: torch.save(state, tmp))


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
    device = pick_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    run.mkdir(parents=True, exist_ok=True)

    # The frozen tokenizer and its codes (encoded once, cached under data.cache or RUN/codes)
    tok_path = tokenizer_for(recipe, run, resume)
    tok = load_tokenizer(tok_path, device)
    for p in tok.parameters():
        p.requires_grad_(False)
    snapshot_tokenizer(tok_path, tok, run, resume)
    atomic_write(run / RECIPE_FILE, lambda tmp: Path(tmp).write_text(yaml.safe_dump(to_dict(recipe), sort_keys=False)))
    tok_summary = tokenizer_summary(tok)
    cache = Path(recipe.data.cache) if recipe.data.cache else run / "codes"
    train_set, _ = load_or_encode(tok, recipe.data, "train", cache, progress)
    valid_set, _ = load_or_encode(tok, recipe.data, "test", cache, progress)

    # Priors, optimizer, schedule
    priors = build_priors(recipe, tok, train_set)
    for prior in priors.values():
        prior.tokenizer = tok_summary
        prior.to(device).train()
    params = [p for prior in priors.values() for p in prior.parameters()]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.99))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_lambda(s, cfg.warmup_steps, cfg.max_steps,
                                                                       cfg.min_lr_ratio))
    start, best, state = 0, {}, None
    if resume:
        state = load_state(run)
        for name, prior in priors.items():
            saved = load_prior(run / PRIOR_FILES[name], tokenizer=tok)
            prior.load_state_dict(saved.state_dict())
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        start, best = int(state["step"]), dict(state.get("best", {}))
    stop = cfg.max_steps if stop_after is None else min(cfg.max_steps, stop_after)
    batches = StepBatches(len(train_set), cfg.batch_size, cfg.seed, start, stop)
    if state is not None:
        set_rng_state(state["rng"])

    metrics_path = run / METRICS_FILE
    interrupted = False
    restore_sigterm = sigterm_stops_like_ctrl_c()
    bar = tqdm(total=cfg.max_steps, initial=start, disable=not progress, unit="step", dynamic_ncols=True,
               desc=recipe.name)
    bar.write(f"{recipe.name}: {', '.join(priors)} prior(s), {sum(p.numel() for p in params) / 1e6:.2f}M "
              f"parameters, over {describe_tokenizer(tok_summary)}; {len(train_set)} training and "
              f"{len(valid_set)} validation items")
    step = start
    acc: dict[str, torch.Tensor] = {}
    acc_n, t_last = 0, time.perf_counter()
    try:
        for index in batches:
            batch = train_set.batch(index)
            loss = 0.0
            row = {}
            for name, prior in priors.items():
                with autocast(device, cfg.precision):
                    nll, count, _ = level_loss(prior, batch, device)
                level_nll = nll / count  # mean nats per target
                loss = loss + level_nll
                row["nll" if name == "codes" else f"nll_{name}"] = level_nll.detach()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
            sched.step()
            step += 1
            bar.update(1)

            row = {"loss": loss.detach(), **row, "grad_norm": grad_norm.detach()}
            for key, value in row.items():
                acc[key] = acc.get(key, 0) + value
            acc_n += 1
            if step % cfg.log_every == 0 or step == stop:
                now = time.perf_counter()
                line = {"step": step, "split": "train", **{k: float(v) / acc_n for k, v in acc.items()}}
                line["lr"] = sched.get_last_lr()[0]
                line["steps_per_s"] = acc_n / max(now - t_last, 1e-9)
                acc, acc_n, t_last = {}, 0, now
                bar.write(format_line(step, cfg.max_steps, {k: v for k, v in line.items() if k != "grad_norm"}))
                _append_jsonl(metrics_path, line)
            if step % cfg.valid_every == 0 or step == cfg.max_steps:
                vm = evaluate_priors(priors, valid_set, tok, device)  # fp32: exact figures whatever trains
                first = next(k for k in vm if k.startswith("nll"))
                if not best or vm[first] < best.get(f"best_{first}", math.inf):
                    best = {f"best_{first}": vm[first], "best_step": step}
                bar.write(format_line(step, cfg.max_steps, {"valid": "", **vm}))
                _append_jsonl(metrics_path, {"step": step, "split": "valid", **vm})
                write_samples(run / "samples", step, priors, tok, recipe.samples, cfg.seed)
                t_last = time.perf_counter()  # validation time is not training speed
            if step % cfg.save_every == 0 or step == stop:
                save_run(run, priors, tok_summary, tok_path, opt, sched, step, recipe, best)
    except KeyboardInterrupt:
        interrupted = True
        bar.write(f"interrupted at step {step}: saving the prior(s) and {STATE_FILE} in {run}")
        save_run(run, priors, tok_summary, tok_path, opt, sched, step, recipe, best)
    finally:
        bar.close()
        restore_sigterm()
    if plot and not interrupted:
        draw_curves(run)
    if interrupted:
        raise KeyboardInterrupt
    return {name: prior.eval() for name, prior in priors.items()}
