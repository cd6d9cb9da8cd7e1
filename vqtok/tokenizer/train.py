"""Tokenizer training: an explicit loop, readable top to bottom (AdamW, warm-up + cosine, DDP via torchrun)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from vqtok.data.build import build_tokenizer_data
from vqtok.device import autocast
from vqtok.errors import VqtokError
from vqtok.metrics import codebook_stats
from vqtok.modality import modality_of
from vqtok.run import (STATE_FILE, Dist, Progress, StepBatches, Trainables, TrainConfig, ddp_wrap, draw_curves,
                       ignore_worker_deaths, improved, init_distributed, load_state, save_state, set_rng_state,
                       start_run, write_recipe)
from vqtok.tokenizer.base import Tokenizer, TokenizerOutput
from vqtok.tokenizer.checkpoint import TOKENIZER_FILE, build_tokenizer, load_tokenizer, save_tokenizer
from vqtok.tokenizer.distill import EncoderDistillation, student_from
from vqtok.tokenizer.discriminators import (AdversarialConfig, Discriminators, discriminator_loss, feature_matching,
                                            generator_loss)
from vqtok.tokenizer.quantizer import QuantizerConfig, VectorQuantizer
from vqtok.tokenizer.recipe import Recipe


# ----------------------------------------------------------------------------- data
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



# ------------------------------------------------------------------------ discriminators
class Adversary:
    """The discriminators of a GAN recipe with their optimizer, and the two passes they add to a training step.

    Real and generated audio go through the discriminators as one batch [x; G(x)]: one forward per
    backward, which is what DistributedDataParallel needs, and half the kernel launches.
    """

    def __init__(self, cfg: AdversarialConfig, train: TrainConfig, trainables: Trainables, device, ddp: Dist):
        self.cfg = cfg
        self.module = Discriminators(cfg).to(device).train()
        self.net = self.module
        if ddp.world > 1:  # DDP also broadcasts rank 0's initial weights
            self.net = ddp_wrap(self.module, device)
        self.part = trainables.add("disc", self.module.parameters(), replace(train, lr=cfg.lr or train.lr),
                                   keep_weights=self.module)
        self.device = device
        self.precision = train.precision

    def active(self, step: int) -> bool:
        """Whether the discriminators train in step `step` (counted from 0)."""
        return step >= self.cfg.start_step

    def feeds_generator(self, step: int) -> bool:
        """Whether their terms join the generator's loss in step `step` (after the discriminators' warm-up)."""
        return step >= self.cfg.start_step + self.cfg.disc_warmup

    def update(self, x: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
        """One discriminator step on real `x` against the (detached) reconstruction; returns its hinge loss."""
        with autocast(self.device, self.precision):
            real, fake = self.net(torch.cat([x, recon.detach()])).halves(len(x))
        loss = discriminator_loss(real, fake)
        self.part.step(loss)
        return loss.detach()

    def generator_terms(self, x: torch.Tensor, recon: torch.Tensor) -> dict[str, torch.Tensor]:
        """The generator's adversarial and feature-matching terms and their weighted sum `gan`."""
        with autocast(self.device, self.precision):
            real, fake = self.net(torch.cat([x, recon])).halves(len(x))
        adv, feat = generator_loss(fake), feature_matching(real, fake)
        return {"gan": self.cfg.weight * adv + self.cfg.feature_weight * feat, "adv": adv, "feat": feat}


# ---------------------------------------------------------------------- validation
@torch.no_grad()
def validate(model: Tokenizer, loader: DataLoader, loss_fn: torch.nn.Module, device, precision: str,
             run: Path, step: int, save_examples: bool) -> dict:
    """Metrics over the whole validation set; a PNG grid or WAV files of a few reconstructions."""
    model.eval()
    sums: dict[str, float] = {}
    count = 0
    codes_per_level: list[list[np.ndarray]] = [[] for _ in range(model.levels)]
    examples = None
    modality = modality_of(model.config)
    scores: dict[str, list[float]] = {}
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
        for key, values in modality.batch_scores(model, x, out.recon, mask).items():
            scores.setdefault(key, []).extend(values)
        if examples is None:
            examples = (x[:8].cpu(), out.recon[:8].float().cpu(), None if mask is None else mask[:8].cpu())
    metrics = {key: value / max(count, 1) for key, value in sums.items() if key != "rec"}
    metrics.update(modality.validation_metrics(metrics))
    for key, values in scores.items():
        if values:
            metrics[key] = float(np.mean(values))
    for level, chunks in enumerate(codes_per_level):
        stats = codebook_stats(np.concatenate(chunks), model.codebook_size[level])
        suffix = level_suffix(model, level)
        metrics[f"usage{suffix}"] = stats["usage"]
        metrics[f"perplexity{suffix}"] = stats["perplexity"]
    if save_examples and examples is not None:
        (run / "valid").mkdir(parents=True, exist_ok=True)
        modality.write_examples(run / "valid", step, model, *examples)
    model.train()
    return metrics


# ------------------------------------------------------------------------- the loop
class DecoderTraining(torch.nn.Module):
    """loss.decoder_only: codes from the frozen encoder and codebooks (no gradient, no EMA update), then the
    decoder path with gradient. A module, so that DDP wraps it as it wraps a whole tokenizer."""

    def __init__(self, model: Tokenizer):
        super().__init__()
        self.model = model
        model.requires_grad_(False)
        for module in model.decoder_modules():
            module.requires_grad_(True)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> TokenizerOutput:
        model = self.model
        with torch.no_grad():
            codes = model.encode_padded(model.pad(x))
        recon = model._trim(model.decode_padded(codes), tuple(x.shape[2:]))
        return TokenizerOutput(recon=recon, codes=codes, commit_loss=recon.new_zeros(()), quant=[])


def use_quantizer_settings(model: Tokenizer, settings: QuantizerConfig) -> None:
    """Give every quantizer of `model` (and its stored config) the training settings `settings`."""
    model.config.quantizer = settings
    for module in model.modules():
        if isinstance(module, VectorQuantizer):
            module.config = settings


def with_activation(model: Tokenizer, activation: str) -> Tokenizer:
    """A copy of `model` whose encoder and decoder use `activation` (same weights and codebook)."""
    swapped = build_tokenizer(replace(model.config, activation=activation))
    swapped.load_state_dict(model.state_dict())
    return swapped


def with_decoder_depth(model: Tokenizer, depth: int) -> Tokenizer:
    """A copy of `model` whose output decoder has `depth` residual blocks a stage (at least its present
    number): the same weights, the added blocks starting as the identity (Decoder.load_shallower). Encoder and
    codebook are untouched, so the codes and their fingerprint stay."""
    net = model.config.net
    if net.decoder_head != "conv":
        raise VqtokError(f"model.net.decoder_res_depth deepens a 'conv' decoder; this one is '{net.decoder_head}'")
    if depth < net.decoder_depth:
        raise VqtokError(f"model.net.decoder_res_depth {depth}: the decoder has {net.decoder_depth} residual blocks "
                         "a stage and can only be deepened")
    deeper = build_tokenizer(replace(model.config, net=replace(net, decoder_res_depth=depth)))
    kept = {k: v for k, v in model.state_dict().items() if not k.startswith("decoder.")}
    missing, unexpected = deeper.load_state_dict(kept, strict=False)
    assert not unexpected and all(k.startswith("decoder.") for k in missing)
    deeper.decoder.load_shallower(model.decoder)
    return deeper


def initial_model(recipe: Recipe, init_from: str | None, resume: bool,
                  notes: list[str]) -> tuple[Tokenizer, EncoderDistillation | None]:
    """The model a run starts from: a student of `loss.teacher` (with its distiller), the tokenizer `init_from`
    (its architecture replaces `recipe.model`), or a new one from `recipe.model`; `notes` gets a line for each
    choice the training log should state."""
    if recipe.loss.teacher:
        return from_teacher(recipe, init_from, notes)
    if init_from:
        return from_tokenizer(recipe, init_from, notes), None
    if recipe.loss.decoder_only and not resume:
        raise VqtokError("loss.decoder_only freezes a trained encoder and codebook: start with --init-from")
    return build_tokenizer(recipe.model), None


def from_teacher(recipe: Recipe, init_from: str | None, notes: list[str]) -> tuple[Tokenizer, EncoderDistillation]:
    """A student built from the teacher's weights, and the distiller that trains its encoder on the teacher's
    latents."""
    if init_from:
        raise VqtokError("loss.teacher starts the model from the teacher's weights; drop --init-from")
    if recipe.loss.decoder_only:
        raise VqtokError("loss.teacher trains the encoder, loss.decoder_only the decoder: choose one")
    teacher = load_tokenizer(recipe.loss.teacher)
    model = student_from(teacher, recipe.model)
    notes.append(f"loss.teacher {recipe.loss.teacher}: training the encoder only, to reproduce its latents")
    if recipe.loss.adversarial is not None:
        notes.append("loss.teacher: the distillation loss alone trains; loss.adversarial is not used")
    return model, EncoderDistillation(model.encoder, teacher.encoder, model.quantizer)


def from_tokenizer(recipe: Recipe, init_from: str, notes: list[str]) -> Tokenizer:
    """The tokenizer `init_from`, with what the recipe may change of it.

    The architecture, weights and codebook come from that tokenizer; the recipe's quantizer settings (EMA decay,
    commitment beta, dead-code thresholds) are training settings, so they apply, and so does its activation,
    which holds no weights (an ELU model fine-tunes into a HardELU one), and a deeper decoder when the recipe sets
    model.net.decoder_res_depth (added blocks start as the identity). `recipe.model` becomes its config.
    """
    model = load_tokenizer(init_from)
    if model.config.activation != recipe.model.activation:
        notes.append(f"--init-from {init_from}: activation {model.config.activation} -> "
                     f"{recipe.model.activation} (the recipe's)")
        model = with_activation(model, recipe.model.activation)
    depth = recipe.model.net.decoder_res_depth
    if depth is not None and depth != model.config.net.decoder_depth:
        notes.append(f"--init-from {init_from}: decoder {model.config.net.decoder_depth} -> {depth} residual "
                     "blocks a stage (the recipe's; the new ones start as the identity)")
        model = with_decoder_depth(model, depth)
    use_quantizer_settings(model, recipe.model.quantizer)
    recipe.model = model.config
    return model


class Steps:
    """What one training step runs for a recipe: the trained net (the model, its decoder path, or the distiller;
    DDP-wrapped on several processes), its optimizer `gen`, the loss and the GAN's discriminators, if any."""

    def __init__(self, recipe: Recipe, model: Tokenizer, distiller: EncoderDistillation | None, device, ddp: Dist,
                 notes: list[str]):
        cfg = recipe.train
        self.model, self.distiller, self.device, self.precision = model, distiller, device, cfg.precision
        decoding = DecoderTraining(model) if recipe.loss.decoder_only else None
        if decoding is not None:
            notes.append("loss.decoder_only: encoder and codebook frozen, every input keeps its codes")
        self.trainables = Trainables()
        trained = model.encoder if distiller is not None else model
        self.gen = self.trainables.add("main", [p for p in trained.parameters() if p.requires_grad], cfg)
        self.loss_fn = modality_of(model.config).reconstruction_loss(model.config, recipe.loss).to(device)
        self.adversary = None
        if recipe.loss.adversarial is not None and distiller is None:
            if model.sample_rate is None:  # the discriminators judge waveforms
                raise VqtokError("loss.adversarial is for audio tokenizers (dims: 1)")
            self.adversary = Adversary(recipe.loss.adversarial, cfg, self.trainables, device, ddp)
        self.net = distiller if distiller is not None else decoding if decoding is not None else model
        if ddp.world > 1:
            # DDP copies rank 0's weights and buffers once at start; after that the codebook buffers are kept
            # equal by the quantizer's own all-reduce, so no per-forward buffer broadcast.
            self.net = ddp_wrap(self.net, device, sync_buffers=False)

    def loss(self, x: torch.Tensor, mask: torch.Tensor | None, step: int) -> tuple[torch.Tensor, dict]:
        """The loss of batch `x` (B, C, *S) at step `step` (counted from 0) and its log row; the discriminators
        take their own step here."""
        model = self.model
        if self.distiller is not None:  # the encoder alone, against the teacher's latents
            x, mask = model.pad(x), None if mask is None else model.pad(mask)
            with autocast(self.device, self.precision):
                d = self.net(x, model.code_mask(mask, model.downsample[0]))
            return d.loss, {"loss": d.loss.detach(), "agree": d.agree}
        with autocast(self.device, self.precision):
            out = self.net(x, mask=mask)
        terms = self.loss_fn(out.recon, x, mask)
        loss = terms["rec"] + out.commit_loss
        adversary = self.adversary
        if adversary is not None and adversary.active(step):
            recon = out.recon if mask is None else out.recon * mask  # padding is silence in both
            terms["disc"] = adversary.update(x, recon)
            if adversary.feeds_generator(step):
                terms.update(adversary.generator_terms(x, recon))
                loss = loss + terms["gan"]
        row = {"loss": loss.detach(), "commit": out.commit_loss.detach(),
               **{k: v.detach() for k, v in terms.items() if k not in ("rec", "gan")}}
        for level, q in enumerate(out.quant):
            suffix = level_suffix(model, level)
            row.update({f"perplexity{suffix}": q.perplexity, f"usage{suffix}": q.usage, f"revived{suffix}": q.revived})
        return loss, row


def train_tokenizer(recipe: Recipe, run: Path, resume: bool = False, init_from: str | None = None,
                    stop_after: int | None = None, progress: bool = True) -> Tokenizer:
    """Train `recipe` into folder `run` and return the trained tokenizer (eval mode).

    `resume` continues from run/state.pt; `init_from` starts from an existing tokenizer's weights;
    `stop_after` ends after that many steps as an interruption would (the schedule still spans max_steps).
    """
    cfg = recipe.train
    ddp = init_distributed(cfg.device)
    device = start_run(cfg, seed_offset=ddp.rank)
    train_set, valid_set = build_tokenizer_data(recipe.data, recipe.model.sample_rate)
    valid_loader = DataLoader(valid_set, batch_size=min(cfg.batch_size, 64), shuffle=False, collate_fn=collate)
    notes: list[str] = []  # lines for the training log
    model, distiller = initial_model(recipe, init_from, resume, notes)
    if ddp.main:  # after --init-from settled the architecture, so that --resume rebuilds this model
        run.mkdir(parents=True, exist_ok=True)
        write_recipe(run, recipe)
    model = model.to(device).train()
    steps = Steps(recipe, model, None if distiller is None else distiller.to(device), device, ddp, notes)
    best_metric = modality_of(model.config).best_metric
    start, best, state = 0, {}, None
    if resume:
        state = load_state(run)
        model.load_state_dict(load_tokenizer(run / TOKENIZER_FILE).state_dict())
        steps.trainables.load_state_dict(state)
        start, best = int(state["step"]), dict(state.get("best", {}))
    stop = cfg.max_steps if stop_after is None else min(cfg.max_steps, stop_after)
    sampler = StepBatches(len(train_set), cfg.batch_size, cfg.seed, start, stop, ddp.rank, ddp.world)
    loader = DataLoader(train_set, batch_sampler=sampler, collate_fn=collate, num_workers=recipe.data.num_workers)
    batches = iter(loader)  # draws the loader's base seed: before the RNG restore, as in an unbroken run
    if state is not None:
        set_rng_state(state["rng"])

    def save(step: int) -> None:
        save_tokenizer(model, run / TOKENIZER_FILE, train_info={"recipe": recipe.name, "step": step, **best})
        save_state(run, step, steps.trainables, best)

    step = start
    try:
        with Progress(run, cfg, recipe.name, start, stop, progress, ddp.main, sums=("revived",)) as log:
            for note in notes:
                log.write(note)
            try:
                for batch in batches:
                    mask = batch.get("mask")
                    loss, row = steps.loss(batch["x"].to(device, non_blocking=True),
                                           None if mask is None else mask.to(device), step)
                    row["grad_norm"] = steps.gen.step(loss).detach()
                    step += 1
                    log.train(step, row, steps.gen.lr)
                    if ddp.main and (step % cfg.valid_every == 0 or step == cfg.max_steps):
                        metrics = validate(model, valid_loader, steps.loss_fn, device, cfg.precision, run, step, True)
                        best = improved(best, metrics, best_metric, step)
                        log.valid(step, metrics)
                    if ddp.main and log.due(step, cfg.save_every):
                        save(step)
            except KeyboardInterrupt:
                log.write(f"interrupted at step {step}: saving {run / TOKENIZER_FILE} and {STATE_FILE}")
                ignore_worker_deaths()
                if ddp.main:
                    save(step)
                raise
    finally:
        ddp.close()
    if ddp.main:
        draw_curves(run)
    return model.eval()


def level_suffix(model: Tokenizer, level: int) -> str:
    """Metric name suffix of a level: none for a single level, _top / _bottom for a VQ-VAE-2."""
    return "" if model.levels == 1 else f"_{model.level_names[level]}"
