"""What every training loop shares: run-folder files, loop settings, seeding, DDP, schedule, state, log, signals.

A loop (tokenizer/train.py, prior/train.py) builds its models, registers each trained set of parameters in a
`Trainables` under a name (one AdamW + warm-up/cosine schedule each, saved and restored together), draws its
batches from `StepBatches` and reports through a `Progress`. A second model (a GAN discriminator) is one more
`trainables.add(...)` and its own `.step(loss)` in the loop.
"""

from __future__ import annotations

import inspect
import math
import os
import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import yaml
from torch import Tensor, nn
from tqdm import tqdm

from vqtok.config import apply_overrides, load_yaml, to_dict
from vqtok.device import pick_device
from vqtok.errors import VqtokError
from vqtok.files import append_jsonl, atomic_write, atomic_write_text
from vqtok.plots import plot_run

STATE_FILE = "state.pt"
RECIPE_FILE = "recipe.yaml"
METRICS_FILE = "metrics.jsonl"
TASKS = ("tokenizer", "prior", "latent_level")


@dataclass
class TrainConfig:
    """The loop settings every recipe has (`train:`)."""

    max_steps: int = 1000
    batch_size: int = 64  # per process
    lr: float = 3e-4
    weight_decay: float = 0.0
    warmup_steps: int = 200
    min_lr_ratio: float = 0.05  # cosine decays to lr * min_lr_ratio
    grad_clip: float = 1.0
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "auto"  # auto (bf16 autocast on CUDA) | fp32 | bf16
    log_every: int = 50
    valid_every: int = 500
    save_every: int = 500
    threads: int | None = None  # torch CPU threads (None: torch's default)


def load_recipe_dict(path: str | Path, overrides: list[str] | None = None) -> dict:
    """YAML + `key.sub=value` overrides -> dict, whose `task` says which schema validates it.

    A staged recipe's `stages` list is left out: vqtok.stages reads it and trains the rest once per stage."""
    data = apply_overrides(load_yaml(path), list(overrides or []))
    data.pop("stages", None)
    task = data.get("task", "tokenizer")
    if task not in TASKS:
        raise VqtokError(f"{path}: unknown task '{task}'; choose one of {', '.join(TASKS)}")
    return data


# ----------------------------------------------------------------------- set-up
@dataclass
class Dist:
    """This process's place under torchrun (rank 0 of 1 without it)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    def close(self) -> None:
        if self.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def init_distributed(device: str = "auto") -> Dist:
    """torchrun sets WORLD_SIZE/RANK/LOCAL_RANK; NCCL for a run on CUDA, gloo for one on the CPU (`train.device`:
    a CPU run on a machine with a GPU still talks gloo, since NCCL moves only CUDA tensors)."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    if world <= 1:
        return Dist()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if pick_device(device).type == "cuda" else "gloo")
    return Dist(rank=dist.get_rank(), world=dist.get_world_size(), local_rank=int(os.environ.get("LOCAL_RANK", 0)))


def start_run(cfg: TrainConfig, seed_offset: int = 0) -> torch.device:
    """Device and CPU threads of `cfg`; torch, Python and NumPy seeded with cfg.seed + seed_offset (the rank)."""
    device = pick_device(cfg.device)
    if device.type == "cuda":
        torch.cuda.set_device(device)  # NCCL's collectives and a bare .cuda() go to this rank's GPU
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed + seed_offset)
    random.seed(cfg.seed + seed_offset)
    np.random.seed(cfg.seed + seed_offset)
    return device


def write_recipe(run: Path, recipe) -> None:
    """RUN/recipe.yaml: the recipe as trained, overrides applied (what --resume reads back)."""
    atomic_write_text(run / RECIPE_FILE, yaml.safe_dump(to_dict(recipe), sort_keys=False))


# ----------------------------------------------------------------------- schedule
def lr_lambda(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """Linear warm-up to 1, then cosine to `min_ratio` at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


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


# ----------------------------------------------------------------------- trained parts and state
@dataclass
class Trained:
    """One set of trained parameters with its AdamW and warm-up + cosine schedule."""

    params: list[Tensor]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    grad_clip: float

    def step(self, loss: Tensor) -> Tensor:
        """One update from `loss`; returns the gradient norm before clipping (a 0-dim tensor, no host sync)."""
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        return grad_norm

    @property
    def lr(self) -> float:
        return self.scheduler.get_last_lr()[0]


@dataclass
class Trainables:
    """The named `Trained` parts of a loop, and modules whose weights live only in the state file.

    State keys: the part called "main" keeps the original `optimizer` / `scheduler` keys (states written
    before this module still load); another part `x` is stored as `optimizer_x` / `scheduler_x`, and a
    module registered with `keep_weights` as `weights_x`.
    """

    parts: dict[str, Trained] = field(default_factory=dict)
    kept: dict[str, nn.Module] = field(default_factory=dict)

    def add(self, name: str, params, cfg: TrainConfig, keep_weights: nn.Module | None = None) -> Trained:
        params = list(params)
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.99))
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: lr_lambda(s, cfg.warmup_steps, cfg.max_steps, cfg.min_lr_ratio))
        self.parts[name] = Trained(params, opt, sched, cfg.grad_clip)
        if keep_weights is not None:
            self.kept[name] = keep_weights
        return self.parts[name]

    def state_dict(self) -> dict:
        state = {}
        for name, part in self.parts.items():
            suffix = "" if name == "main" else f"_{name}"
            state[f"optimizer{suffix}"] = part.optimizer.state_dict()
            state[f"scheduler{suffix}"] = part.scheduler.state_dict()
        state.update({f"weights_{name}": module.state_dict() for name, module in self.kept.items()})
        return state

    def load_state_dict(self, state: dict) -> None:
        for name, part in self.parts.items():
            suffix = "" if name == "main" else f"_{name}"
            part.optimizer.load_state_dict(state[f"optimizer{suffix}"])
            part.scheduler.load_state_dict(state[f"scheduler{suffix}"])
        for name, module in self.kept.items():
            module.load_state_dict(state[f"weights_{name}"])


def rng_state() -> dict:
    """Every RNG a step draws from (torch, Python, NumPy, CUDA), as tensors and plain types."""
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


def save_state(run: Path, step: int, trainables: Trainables, best: dict) -> None:
    """RUN/state.pt: step, optimizers, schedules, RNG and best validation figures (tensors and plain types)."""
    state = {"step": step, **trainables.state_dict(), "rng": rng_state(), "best": best}
    atomic_write(run / STATE_FILE, lambda tmp: torch.save(state, tmp))


def load_state(run: Path) -> dict:
    """RUN/state.pt, read with weights_only=True (never unpickles code)."""
    path = run / STATE_FILE
    if not path.is_file():
        raise VqtokError(f"{run}: no {STATE_FILE} to resume from")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable state is the same user error
        raise VqtokError(f"{path}: unreadable training state ({type(err).__name__})") from None


def improved(best: dict, metrics: dict[str, float], key: str, step: int) -> dict:
    """`best` updated when metrics[key] is lower than best's: {"best_KEY": value, "best_step": step}."""
    if metrics[key] < best.get(f"best_{key}", math.inf):
        return {f"best_{key}": metrics[key], "best_step": step}
    return best


# ----------------------------------------------------------------------- progress: bar, log, signals
def format_line(step: int, max_steps: int, row: dict) -> str:
    parts = [f"step {step}/{max_steps}"]
    for key, value in row.items():
        if key in ("step", "split", "time"):
            continue
        parts.append(f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}")
    return " | ".join(parts)


class Progress:
    """A loop's tqdm bar and metrics log (RUN/metrics.jsonl), with SIGTERM stopping the loop like Ctrl-C.

    `train(step, row)` accumulates a step's figures on the device (no host sync) and writes their interval
    means every `log_every` steps; keys starting with one of `sums` are reported as interval totals (the log
    line says over how many steps; metrics.jsonl keeps the number, `log_every` steps apart).
    Only the main process (`main`) writes. Use as a context manager around the loop.
    """

    def __init__(self, run: Path, cfg: TrainConfig, name: str, start: int, stop: int, show: bool = True,
                 main: bool = True, sums: tuple[str, ...] = ()):
        self.path, self.cfg, self.stop, self.main, self.sums = run / METRICS_FILE, cfg, stop, main, sums
        self.bar = tqdm(total=cfg.max_steps, initial=start, disable=not (show and main), unit="step",
                        dynamic_ncols=True, desc=name)
        self.acc: dict[str, Tensor] = {}
        self.count, self.t_last = 0, time.perf_counter()
        self._restore: Callable[[], object] | None = None

    def __enter__(self) -> Progress:
        if self.main:
            self._restore = sigterm_stops_like_ctrl_c()
        return self

    def __exit__(self, *exc) -> None:
        self.bar.close()
        if self._restore is not None:
            self._restore()

    def write(self, text: str) -> None:
        if self.main:
            self.bar.write(text)

    def train(self, step: int, row: dict[str, Tensor], lr: float) -> None:
        self.bar.update(1)
        for key, value in row.items():
            self.acc[key] = self.acc.get(key, 0) + value
        self.count += 1
        if step % self.cfg.log_every and step != self.stop:
            return
        now = time.perf_counter()
        line: dict = {"step": step, "split": "train"}
        for key, value in self.acc.items():
            line[key] = float(value) if key.startswith(self.sums or ("\0",)) else float(value) / self.count
        line["lr"] = lr
        line["steps_per_s"] = self.count / max(now - self.t_last, 1e-9)
        # A total says over how many steps it ran: codes revived in 100 steps can outnumber the codebook.
        shown = {k: f"{v:.0f} in {self.count} steps" if k.startswith(self.sums or ("\0",)) else v
                 for k, v in line.items() if k != "grad_norm"}
        self.acc, self.count, self.t_last = {}, 0, now
        self.write(format_line(step, self.cfg.max_steps, shown))
        if self.main:
            append_jsonl(self.path, line)

    def valid(self, step: int, metrics: dict[str, float]) -> None:
        self.write(format_line(step, self.cfg.max_steps, {"valid": "", **metrics}))
        if self.main:
            append_jsonl(self.path, {"step": step, "split": "valid", **metrics})
        self.t_last = time.perf_counter()  # validation time is not training speed

    def due(self, step: int, every: int) -> bool:
        """Step `step` is a multiple of `every` or the last of this session."""
        return step % every == 0 or step == self.stop


def sigterm_stops_like_ctrl_c() -> Callable[[], object]:
    """Make SIGTERM (a cluster's pre-emption) raise KeyboardInterrupt, so a training loop saves and stops as
    on Ctrl-C. Returns the function that puts the previous handler back."""

    def on_sigterm(signum, frame):
        raise KeyboardInterrupt

    old_handler = signal.signal(signal.SIGTERM, on_sigterm)
    return lambda: signal.signal(signal.SIGTERM, old_handler)


def ignore_worker_deaths() -> None:
    """Stop DataLoader's SIGCHLD check from raising in the main process.

    A pre-emption (or `timeout`) signals the whole process group, so the loader's workers die with the
    trainer; without this their deaths raise "DataLoader worker ... is killed" in the middle of the save
    that the interruption started. Called once the loop is left, before that save.
    """
    if hasattr(signal, "SIGCHLD"):
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)


def draw_curves(run: Path) -> None:
    """curves.png for a finished run; a failure is reported, never raised (a plot must not lose a run)."""
    try:
        plot_run(run)
    except Exception as err:  # noqa: BLE001
        tqdm.write(f"could not draw curves: {err}")


def ddp_wrap(net: torch.nn.Module, device: torch.device, sync_buffers: bool = True) -> torch.nn.Module:
    """`net` in DistributedDataParallel on `device`. Without `sync_buffers`, buffers are copied from rank 0 once at
    start but not before every forward (torch 2.13 calls that `forward_sync_buffers`, earlier releases
    `broadcast_buffers`)."""
    ids = [device.index] if device.type == "cuda" else None
    ddp = torch.nn.parallel.DistributedDataParallel
    if "forward_sync_buffers" in inspect.signature(ddp.__init__).parameters:
        return ddp(net, device_ids=ids, forward_sync_buffers=sync_buffers)
    return ddp(net, device_ids=ids, broadcast_buffers=sync_buffers)
