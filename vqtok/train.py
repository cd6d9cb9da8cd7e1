"""Tokenizer training: an explicit loop, readable top to bottom (AdamW, warm-up + cosine, DDP via torchrun)."""

from __future__ import annotations

import json
import math
import os
import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import yaml
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from vqtok.config import to_dict
from vqtok.device import autocast, pick_device
from vqtok.errors import VqtokError
from vqtok.losses import MultiResolutionSTFTLoss, image_mse, waveform_l1
from vqtok.recipe import DataConfig, Recipe
from vqtok.tokenizer.base import Tokenizer
from vqtok.files import atomic_write
from vqtok.tokenizer.checkpoint import TOKENIZER_FILE, build_tokenizer, load_tokenizer, save_tokenizer

STATE_FILE = "state.pt"
RECIPE_FILE = "recipe.yaml"
METRICS_FILE = "metrics.jsonl"


# ----------------------------------------------------------------------------- data
def build_datasets(data: DataConfig, model_sample_rate: int | None) -> tuple[Dataset, Dataset]:
    """(train, validation) datasets for a recipe's data section; validation is fixed and deterministic."""
    from torch.utils.data import Subset

    if data.kind == "mnist":
        from vqtok.data.mnist import MNIST

        train = MNIST(data.root, "train", pad_to=data.pad_to, download=data.download)
        valid = MNIST(data.root, "test", pad_to=data.pad_to, download=data.download)
    elif data.kind == "audio":
        from vqtok.data.audio import AudioFolder

        if model_sample_rate is None:
            raise VqtokError("data.kind 'audio' needs model.sample_rate")
        train = AudioFolder(data.root, model_sample_rate, data.segment_seconds, "train", data.rule, random_crop=True)
        if data.concat:
            from vqtok.data.audio import ConcatClips

            train = ConcatClips(train, data.max_gap_seconds, data.gain_db)
        # Whole validation clips, padded per batch by `collate` (the mask keeps padding out).
        valid = AudioFolder(data.root, model_sample_rate, None, "test", data.rule, random_crop=False)
    elif data.kind == "images":
        from vqtok.data.images import ImageFolder

        size = tuple(data.image_size) if data.image_size else None
        train = ImageFolder(data.root, size=size, channels=data.channels, split="train")
        valid = ImageFolder(data.root, size=size, channels=data.channels, split="test")
    else:
        raise VqtokError(f"unknown data.kind '{data.kind}'; choose one of mnist, audio, images")
    if len(valid) > data.valid_items:
        valid = Subset(valid, range(data.valid_items))
    return train, valid


def collate(items: list[dict]) -> dict:
    """Stack items; whole audio clips of different lengths are right-padded with a mask."""
    xs = [it["x"] for it in items]
    longest = max(x.shape[-1] for x in xs)
    out: dict = {"label": torch.stack([torch.as_tensor(it["label"]) for it in items])}
    if all(x.shape == xs[0].shape for x in xs):
        out["x"] = torch.stack(xs)
        if "mask" in items[0]:
            out["mask"] = torch.stack([it["mask"] for it in items])
        return out
    x = torch.zeros(len(xs), xs[0].shape[0], longest)
    mask = torch.zeros(len(xs), 1, longest)
    for i, it in enumerate(items):
        t = it["x"].shape[-1]
        x[i, :, :t] = it["x"]
        mask[i, :, :t] = it["mask"] if "mask" in it else 1.0
    out.update(x=x, mask=mask)
    return out


class StepBatches(torch.utils.data.Sampler):
    """Index lists for steps start..max_steps: a seeded permutation per epoch, this rank's share.

    The batch of step s depends only on (seed, s), so a resumed run sees the same batches.
    """

    def __init__(self, n: int, batch_size: int, seed: int, start: int, stop: int, rank: int = 0, world: int = 1):
        self.n, self.bs, self.seed, self.start, self.stop = n, batch_size, seed, start, stop
        self.rank, self.world = rank, world
        self.per_epoch = max(1, n // (batch_size * world))  # drop the ragged tail of each epoch

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def __iter__(self):
        epoch, perm = None, None
        for step in range(self.start, self.stop):
            e, b = divmod(step, self.per_epoch)
            if e != epoch:
                gen = torch.Generator().manual_seed(self.seed * 100_003 + e)
                perm = torch.randperm(self.n, generator=gen)
                if self.n < self.bs * self.world:  # tiny datasets: repeat to fill a batch
                    perm = perm.repeat(math.ceil(self.bs * self.world / self.n))
                epoch = e
            lo = (b * self.world + self.rank) * self.bs
            yield perm[lo : lo + self.bs].tolist()


# --------------------------------------------------------------------------- losses
class ReconstructionLoss(torch.nn.Module):
    """Images: MSE on [0, 1] pixels. Audio: L1 on the waveform + multi-resolution STFT/log-mel loss."""

    def __init__(self, recipe: Recipe):
        super().__init__()
        self.weights = recipe.loss
        self.audio = recipe.model.dims == 1
        if self.audio:
            self.stft = MultiResolutionSTFTLoss(recipe.model.sample_rate, fft_sizes=tuple(recipe.loss.fft_sizes))

    def forward(self, recon: torch.Tensor, x: torch.Tensor, mask: torch.Tensor | None) -> dict[str, torch.Tensor]:
        recon = recon.float()
        if not self.audio:
            mse = image_mse(recon, x)
            return {"rec": self.weights.mse * mse, "mse": mse}
        l1 = waveform_l1(recon, x, mask)
        stft = self.stft(recon, x, mask)
        return {"rec": self.weights.l1 * l1 + self.weights.stft * stft, "l1": l1, "stft": stft}


# ---------------------------------------------------------------------- distributed
@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed() -> Dist:
    """torchrun sets WORLD_SIZE/RANK/LOCAL_RANK; NCCL on CUDA, gloo on CPU."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    if world <= 1:
        return Dist()
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
    return Dist(rank=dist.get_rank(), world=dist.get_world_size(), local_rank=int(os.environ.get("LOCAL_RANK", 0)))


# ----------------------------------------------------------------------- schedule
def lr_lambda(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """Linear warm-up to 1, then cosine to `min_ratio` at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


# -------------------------------------------------------------------- checkpoints
def rng_state() -> dict:
    _, py_state, py_gauss = random.getstate()
    _, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": list(py_state),
        "python_gauss": py_gauss,
        "numpy": torch.from_numpy(np_keys.astype(np.int64)),
        "numpy_rest": [int(np_pos), int(np_has_gauss), float(np_gauss)],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((3, tuple(state["python"]), state["python_gauss"]))
    pos, has_gauss, gauss = state["numpy_rest"]
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), pos, has_gauss, gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_run(run: Path, model: Tokenizer, opt, sched, step: int, recipe: Recipe, best: dict) -> None:
    """Tokenizer (safetensors, loadable alone) + training state (torch.save, tensors and plain types only)."""
    save_tokenizer(model, run / TOKENIZER_FILE, train_info={"recipe": recipe.name, "step": step})
    state = {"step": step, "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "rng": rng_state(),
             "best": best}
    atomic_write(run / STATE_FILE, lambda tmp: torch.save(state, tmp))


def load_state(run: Path) -> dict:
    path = run / STATE_FILE
    if not path.is_file():
        raise VqtokError(f"{run}: no {STATE_FILE} to resume from")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable state is the same user error
        raise VqtokError(f"{path}: unreadable training state ({type(err).__name__})") from None


# ---------------------------------------------------------------------- validation
@torch.no_grad()
def validate(model: Tokenizer, loader: DataLoader, loss_fn: ReconstructionLoss, device, precision: str,
             run: Path, step: int, save_examples: bool) -> dict:
    """Metrics over the whole validation set; a PNG grid or WAV files of a few reconstructions."""
    from vqtok.metrics import codebook_stats, log_mel_distance, si_snr

    model.eval()
    sums: dict[str, float] = {}
    count = 0
    codes_per_level: list[list[np.ndarray]] = [[] for _ in range(model.levels)]
    examples = None
    audio_scores = {"si_snr": [], "mel_distance": []}
    for batch in loader:
        x = batch["x"].to(device)
        mask = batch.get("mask")
        mask = mask.to(device) if mask is not None else None
        with autocast(device, precision):
            out = model(x, mask=mask)
        terms = loss_fn(out.recon, x, mask)
        n = x.shape[0]
        for key, value in terms.items():
            sums[key] = sums.get(key, 0.0) + float(value) * n
        count += n
        for level, codes in enumerate(out.codes):
            if mask is None:
                codes_per_level[level].append(codes.cpu().numpy().ravel())
            else:  # only frames holding real samples
                frame_mask = model.code_mask(model.pad(mask), model.downsample[level])[:, 0]
                codes_per_level[level].append(codes[frame_mask].cpu().numpy())
        if model.dims == 1:
            for i in range(n):
                t = int(mask[i].sum()) if mask is not None else x.shape[-1]
                ref, est = x[i, 0, :t].cpu().numpy(), out.recon[i, 0, :t].float().cpu().numpy()
                audio_scores["si_snr"].append(si_snr(est, ref))
                audio_scores["mel_distance"].append(log_mel_distance(est, ref, model.sample_rate))
        if examples is None:
            examples = (x[:8].cpu(), out.recon[:8].float().cpu(), None if mask is None else mask[:8].cpu())
    metrics = {key: value / max(count, 1) for key, value in sums.items() if key != "rec"}
    if model.dims == 2:
        metrics["psnr"] = 10 * math.log10(1.0 / max(metrics["mse"], 1e-12))
    for key, values in audio_scores.items():
        if values:
            metrics[key] = float(np.mean(values))
    for level, chunks in enumerate(codes_per_level):
        stats = codebook_stats(np.concatenate(chunks), model.codebook_size[level])
        suffix = "" if model.levels == 1 else f"_{('top', 'bottom')[level]}"
        metrics[f"usage{suffix}"] = stats["usage"]
        metrics[f"perplexity{suffix}"] = stats["perplexity"]
    if save_examples and examples is not None:
        save_examples_to(run / "valid", step, model, *examples)
    model.train()
    return metrics


def save_examples_to(folder: Path, step: int, model: Tokenizer, x, recon, mask) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    if model.dims == 2:
        from vqtok.plots import image_grid, save_png

        # Row pairs: originals above their reconstructions.
        save_png(image_grid(torch.cat([x, recon]), nrow=x.shape[0]), folder / f"step{step:07d}.png")
        return
    from vqtok.data.audio import write_wav
    from vqtok.plots import save_spectrograms

    clips, titles = [], []
    for i in range(min(4, x.shape[0])):
        t = int(mask[i].sum()) if mask is not None else x.shape[-1]
        pair = torch.cat([x[i, 0, :t], torch.zeros(model.sample_rate // 4), recon[i, 0, :t]])
        write_wav(folder / f"step{step:07d}_{i}.wav", pair, model.sample_rate)
        clips += [x[i, 0, :t], recon[i, 0, :t]]
        titles += [f"clip {i}: input", f"clip {i}: reconstruction"]
    # Each input beside its reconstruction (two pairs per row).
    save_spectrograms(clips, model.sample_rate, titles, folder / f"step{step:07d}.png")


# ------------------------------------------------------------------------- the loop
def format_line(step: int, max_steps: int, row: dict) -> str:
    parts = [f"step {step}/{max_steps}"]
    for key, value in row.items():
        if key in ("step", "split", "time"):
            continue
        if isinstance(value, float):
            parts.append(f"{key} {value:.4g}")
        else:
            parts.append(f"{key} {value}")
    return " | ".join(parts)


def train_tokenizer(recipe: Recipe, run: Path, resume: bool = False, init_from: str | None = None,
                    stop_after: int | None = None, progress: bool = True) -> Tokenizer:
    """Train `recipe` into folder `run` and return the trained tokenizer (eval mode).

    `resume` continues from run/state.pt; `init_from` starts from an existing tokenizer's weights;
    `stop_after` ends after that many steps as an interruption would (the schedule still spans max_steps).
    """
    ddp = init_distributed()
    cfg = recipe.train
    device = pick_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed + ddp.rank)
    random.seed(cfg.seed + ddp.rank)
    np.random.seed(cfg.seed + ddp.rank)
    if ddp.main:
        run.mkdir(parents=True, exist_ok=True)
        atomic_write(run / RECIPE_FILE, lambda tmp: Path(tmp).write_text(yaml.safe_dump(to_dict(recipe), sort_keys=False)))

    # Data
    train_set, valid_set = build_datasets(recipe.data, recipe.model.sample_rate)
    valid_loader = DataLoader(valid_set, batch_size=min(cfg.batch_size, 64), shuffle=False, collate_fn=collate)

    # Model, optimizer, schedule
    if init_from:
        model = load_tokenizer(init_from)
        recipe.model = model.config
    else:
        model = build_tokenizer(recipe.model)
    model = model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.99))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_lambda(s, cfg.warmup_steps, cfg.max_steps, cfg.min_lr_ratio))
    loss_fn = ReconstructionLoss(recipe).to(device)
    start, best, state = 0, {}, None
    if resume:
        state = load_state(run)
        resumed = load_tokenizer(run / TOKENIZER_FILE)
        model.load_state_dict(resumed.state_dict())
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        start, best = int(state["step"]), dict(state.get("best", {}))
    net = model
    if ddp.world > 1:
        # DDP copies rank 0's weights and buffers once at start; after that the codebook buffers are kept
        # equal by the quantizer's own all-reduce, so no per-forward buffer broadcast.
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, forward_sync_buffers=False)

    stop = cfg.max_steps if stop_after is None else min(cfg.max_steps, stop_after)
    sampler = StepBatches(len(train_set), cfg.batch_size, cfg.seed, start, stop, ddp.rank, ddp.world)
    loader = DataLoader(train_set, batch_sampler=sampler, collate_fn=collate, num_workers=recipe.data.num_workers)
    batches = iter(loader)  # draws the loader's base seed: before the RNG restore, as in an unbroken run
    if state is not None:
        set_rng_state(state["rng"])

    metrics_path = run / METRICS_FILE
    interrupted = False
    restore_sigterm = sigterm_stops_like_ctrl_c() if ddp.main else None
    bar = tqdm(total=cfg.max_steps, initial=start, disable=not (progress and ddp.main), unit="step",
               dynamic_ncols=True, desc=recipe.name)
    step = start
    acc: dict[str, float] = {}
    acc_n, t_last = 0, time.perf_counter()
    try:
        for batch in batches:
            x = batch["x"].to(device, non_blocking=True)
            mask = batch.get("mask")
            mask = mask.to(device) if mask is not None else None
            with autocast(device, cfg.precision):
                out = net(x, mask=mask)
            terms = loss_fn(out.recon, x, mask)
            loss = terms["rec"] + out.commit_loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            sched.step()
            step += 1
            bar.update(1)

            # Accumulate on device; read back only at log time (no per-step host sync).
            row = {"loss": loss.detach(), "commit": out.commit_loss.detach(), "grad_norm": grad_norm.detach(),
                   **{k: v.detach() for k, v in terms.items() if k != "rec"}}
            for level, q in enumerate(out.quant):
                suffix = "" if model.levels == 1 else f"_{('top', 'bottom')[level]}"
                row[f"perplexity{suffix}"] = q.perplexity
                row[f"usage{suffix}"] = q.usage
                row[f"revived{suffix}"] = q.revived
            for key, value in row.items():
                acc[key] = acc.get(key, 0) + value
            acc_n += 1

            if step % cfg.log_every == 0 or step == stop:
                now = time.perf_counter()
                line = {"step": step, "split": "train"}
                for key, value in acc.items():
                    # revived codes are a count over the interval; the rest are interval means
                    line[key] = float(value) if key.startswith("revived") else float(value) / acc_n
                line["lr"] = sched.get_last_lr()[0]
                line["steps_per_s"] = acc_n / max(now - t_last, 1e-9)
                acc, acc_n, t_last = {}, 0, now
                if ddp.main:
                    bar.write(format_line(step, cfg.max_steps, {k: v for k, v in line.items() if k != "grad_norm"}))
                    _append_jsonl(metrics_path, line)
            if step % cfg.valid_every == 0 or step == cfg.max_steps:
                if ddp.main:
                    vm = validate(model, valid_loader, loss_fn, device, cfg.precision, run, step, True)
                    bar.write(format_line(step, cfg.max_steps, {"valid": "", **vm}))
                    _append_jsonl(metrics_path, {"step": step, "split": "valid", **vm})
                    t_last = time.perf_counter()  # validation time is not training speed
            if ddp.main and (step % cfg.save_every == 0 or step == stop):
                save_run(run, model, opt, sched, step, recipe, best)
    except KeyboardInterrupt:
        interrupted = True
        if ddp.main:
            bar.write(f"interrupted at step {step}: saving {run / TOKENIZER_FILE} and {STATE_FILE}")
            save_run(run, model, opt, sched, step, recipe, best)
    finally:
        bar.close()
        if restore_sigterm is not None:
            restore_sigterm()
        if ddp.world > 1 and dist.is_initialized():
            dist.destroy_process_group()
    if ddp.main and not interrupted:
        draw_curves(run)
    if interrupted:
        raise KeyboardInterrupt
    return model.eval()


def sigterm_stops_like_ctrl_c() -> Callable[[], None]:
    """Make SIGTERM (a cluster's pre-emption) raise KeyboardInterrupt, so a training loop saves and stops as
    on Ctrl-C. Returns the function that puts the previous handler back."""

    def on_sigterm(signum, frame):
        raise KeyboardInterrupt

    old_handler = signal.signal(signal.SIGTERM, on_sigterm)
    return lambda: signal.signal(signal.SIGTERM, old_handler)


def draw_curves(run: Path) -> None:
    """curves.png for a finished run; a failure is reported, never raised (a plot must not lose a run)."""
    try:
        from vqtok.plots import plot_run

        plot_run(run)
    except Exception as err:  # noqa: BLE001
        tqdm.write(f"could not draw curves: {err}")


def _append_jsonl(path: Path, row: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")
