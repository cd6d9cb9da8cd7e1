"""Train a low-rate level on a frozen tokenizer's latents (task: latent_level), stage after stage.

The base tokenizer (e.g. speech-16k) encodes every training file once; the level then trains on its latents,
so a step costs a small fraction of a waveform step. A stage may add a loss measured through the base decoder
(multi-resolution STFT of the decoded audio against the audio) and may fine-tune that decoder too. The result
is an arch "stacked" tokenizer: base encoder -> level (multi-codebook codes) -> base decoder.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from vqtok.config import from_dict
from vqtok.data.audio import AUDIO_EXTENSIONS, list_files, load_audio
from vqtok.errors import VqtokError
from vqtok.losses import MultiResolutionSTFTLoss, waveform_l1
from vqtok.run import Progress, TrainConfig, lr_lambda, write_recipe
from vqtok.tokenizer.base import LevelConfig, Tokenizer, TokenizerConfig
from vqtok.tokenizer.checkpoint import TOKENIZER_FILE, build_tokenizer, load_tokenizer, save_tokenizer
from vqtok.tokenizer.quantizer import QuantizerConfig
from vqtok.tokenizer.stacked import Stacked

STATE_FILE = "state.pt"
ALIGN = 8  # segments start on multiples of the level's stride, as whole clips do


@dataclass
class LatentLoss:
    latent: float = 1.0  # MSE to the base quantizer's vectors, in units of their per-channel std
    stft: float = 0.0  # > 0: multi-resolution STFT loss of the base decoder's output against the audio
    l1: float = 0.0  # > 0: L1 between that output and the audio (with stft 15: speech-16k's own loss, l1 1)
    fft_sizes: list[int] = field(default_factory=lambda: [256, 512, 1024, 2048])  # the STFT loss's windows
    train_decoder: bool = False  # fine-tune the base decoder as well (needs stft > 0)
    # the codes stay as they are: the level's encoder and codebooks are frozen, only its decoder (and with
    # train_decoder the base decoder) trains, on every prefix of the stages as quantizer dropout draws them; token
    # files and priors of the earlier stage keep their meaning (the codes fingerprint does not move)
    decoder_only: bool = False


@dataclass
class LatentStage:
    train: TrainConfig = field(default_factory=TrainConfig)
    loss: LatentLoss = field(default_factory=LatentLoss)
    segment_seconds: float = 1.0


@dataclass
class LatentData:
    root: str = "../shared/data/speech"
    train_split: str = "train"
    valid_split: str = "test"  # scored every valid_every steps: never trained on
    valid_pieces: int = 8


@dataclass
class LatentLevelRecipe:
    """`task: latent_level`: what to stack on which tokenizer, and the stages that train it."""

    name: str = "latent_level"
    task: str = "latent_level"
    base: str = "speech-16k"  # shipped name or tokenizer file
    # a stacked tokenizer (shipped name or file) on the same base whose level and decoder the run starts from,
    # e.g. to refine speech-lm-16k or fit it to your own data; None: a new level from scratch
    init: str | None = None
    level: LevelConfig = field(default_factory=LevelConfig)
    quantizer: QuantizerConfig = field(default_factory=QuantizerConfig)
    data: LatentData = field(default_factory=LatentData)
    stages: list[LatentStage] = field(default_factory=lambda: [LatentStage()])

    def __post_init__(self):
        if self.task != "latent_level":
            raise VqtokError(f"a latent_level recipe has task 'latent_level', got '{self.task}'")
        if self.level.codebooks < 1:
            raise VqtokError(f"level.codebooks must be at least 1, got {self.level.codebooks}")
        for i, stage in enumerate(self.stages):
            if stage.loss.train_decoder and stage.loss.stft <= 0 and stage.loss.l1 <= 0:
                raise VqtokError(f"stages[{i}]: loss.train_decoder needs a loss through the decoder (loss.stft or "
                                 "loss.l1 > 0)")


def load_latent_recipe(data: dict) -> LatentLevelRecipe:
    return from_dict(LatentLevelRecipe, data)


def stacked_config(base_config: TokenizerConfig, level: LevelConfig, quantizer: QuantizerConfig) -> TokenizerConfig:
    """The arch 'stacked' config of `level` on a base tokenizer's config."""
    config = copy.deepcopy(base_config)
    config.arch, config.top, config.quantizer = "stacked", copy.deepcopy(level), copy.deepcopy(quantizer)
    return config


def stacked_tokenizer(base: Tokenizer, level: LevelConfig, quantizer: QuantizerConfig) -> Stacked:
    """An arch 'stacked' tokenizer holding `base`'s encoder and decoder (copied) and a new level."""
    tok = build_tokenizer(stacked_config(base.config, level, quantizer))
    tok.encoder.load_state_dict(base.encoder.state_dict())
    tok.decoder.load_state_dict(base.decoder.state_dict())
    return tok


# ------------------------------------------------------------------------------------------- data
def start_from(tok: Stacked, base: Tokenizer, init: str, base_name: str) -> None:
    """Load the level and decoder of the stacked tokenizer `init` into `tok`; its encoder must be `base`'s. A
    recipe level with a deeper decoder (level.decoder_res_depth) takes init's decoder with the added residual blocks
    starting as the identity (Decoder.load_shallower): the same output and the same codes until it trains."""
    src = load_tokenizer(init)
    if not isinstance(src, Stacked):
        raise VqtokError(f"init: {init} is not a stacked tokenizer (arch '{src.config.arch}')")
    theirs, ours = src.encoder.state_dict(), base.encoder.state_dict()
    if theirs.keys() != ours.keys() or any(not torch.equal(theirs[k].float(), ours[k].float()) for k in ours):
        raise VqtokError(f"init: {init} does not stack on the recipe's base {base_name}")
    deeper = tok.config.top.decoder_depth > src.config.top.decoder_depth  # the codes stay: see LevelConfig
    state = {k: v for k, v in src.level.state_dict().items() if not (deeper and k.startswith("decoder."))}
    try:
        missing, unexpected = tok.level.load_state_dict(state, strict=not deeper)
        if unexpected or any(not k.startswith("decoder.") for k in missing):
            raise RuntimeError
        if deeper:
            tok.level.decoder.load_shallower(src.level.decoder)
    except (RuntimeError, ValueError):
        raise VqtokError(f"init: {init}'s level does not fit the recipe's level and quantizer") from None
    tok.decoder.load_state_dict(src.decoder.state_dict())


def list_audio(root: Path) -> list[Path]:
    files = list_files(root, AUDIO_EXTENSIONS)
    if not files:
        raise VqtokError(f"{root}: no audio files ({', '.join(AUDIO_EXTENSIONS)})")
    return files


@torch.no_grad()
def latent_corpus(base: Tokenizer, files: list[Path], stride: int) -> dict[str, torch.Tensor]:
    """Each file brought to the base's level and cut to whole level frames: its audio, the base encoder's
    latents z and the base quantizer's vectors e. Flat tensors: audio (S,), z (D, N), e (D, N), and
    frames (F + 1,), each file's first latent frame (cumulative)."""
    hop = base.downsample[0]
    audios, zs, es = [], [], []
    for path in files:
        x, _ = base.at_level(load_audio(path, base.sample_rate)[0])
        n = len(x) // (hop * stride) * hop * stride
        if n == 0:
            continue
        z = base.encoder(x[:n].view(1, 1, -1))[0]  # (D, n / hop)
        audios.append(x[:n])
        zs.append(z)
        es.append(base.quantizer.decode(base.quantizer.encode(z[None]))[0])
    frames = torch.tensor([0] + [z.shape[1] for z in zs]).cumsum(0)
    return {"audio": torch.cat(audios), "z": torch.cat(zs, 1), "e": torch.cat(es, 1), "frames": frames}


def corpus(base: Tokenizer, folder: Path, cache: Path, stride: int) -> dict[str, torch.Tensor]:
    """latent_corpus of every audio file under `folder`, kept in `cache` (safetensors) for later stages."""
    if cache.exists():
        return load_file(cache)
    data = latent_corpus(base, list_audio(folder), stride)
    cache.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in data.items()}, cache)
    return data


def draw_batch(data: dict, hop: int, batch: int, frames: int, gen: torch.Generator):
    """`batch` random segments of `frames` latent frames (files drawn by length, starts on multiples of ALIGN):
    z (B, D, frames), e (B, D, frames), audio (B, 1, frames * hop)."""
    offsets = data["frames"]
    lengths = offsets[1:] - offsets[:-1]
    ok = (lengths >= frames).nonzero()[:, 0]
    if len(ok) == 0:
        raise VqtokError(f"no training file holds a {frames}-frame segment: lower segment_seconds")
    pick = ok[torch.multinomial(lengths[ok].float(), batch, replacement=True, generator=gen)]
    z, e, a = [], [], []
    for f in pick.tolist():
        span = int(lengths[f]) - frames
        start = int(offsets[f]) + ALIGN * int(torch.randint(span // ALIGN + 1, (1,), generator=gen))
        z.append(data["z"][:, start : start + frames])
        e.append(data["e"][:, start : start + frames])
        a.append(data["audio"][start * hop : (start + frames) * hop])
    return torch.stack(z), torch.stack(e), torch.stack(a)[:, None]


# ------------------------------------------------------------------------------------------- loop
def train_latent_level(recipe: LatentLevelRecipe, run: Path, resume: bool = False, progress: bool = True) -> Stacked:
    """Train the recipe's stages in `run`; the tokenizer after each stage goes to run/stageN/ and run/."""
    base = load_tokenizer(recipe.base).eval()
    seed = recipe.stages[0].train.seed
    torch.manual_seed(seed)  # the level's initial weights
    tok = stacked_tokenizer(base, recipe.level, recipe.quantizer)
    level, decoder = tok.level, tok.decoder
    stride, hop = level.stride, base.downsample[0]
    root = Path(recipe.data.root)
    data = corpus(base, root / recipe.data.train_split, run / "cache" / "train.safetensors", stride)
    valid = corpus(base, root / recipe.data.valid_split, run / "cache" / "valid.safetensors", stride)
    if recipe.init:
        start_from(tok, base, recipe.init, recipe.base)
    else:
        level.mean.copy_(data["e"].mean(1))
        std = data["e"].std(1)
        level.std.copy_(std.clamp_min(max(1e-3 * float(std.max()), 1e-8)))  # a channel that never moves: no 0 / 0
    for p in tok.encoder.parameters():
        p.requires_grad_(False)

    run.mkdir(parents=True, exist_ok=True)
    write_recipe(run, recipe)
    state_path = run / STATE_FILE
    state = torch.load(state_path, weights_only=True) if resume and state_path.exists() else None
    first_stage, first_step = (state["stage"], state["step"]) if state else (0, 0)
    if state:
        level.load_state_dict(state["level"])
        decoder.load_state_dict(state["decoder"])
    gen = torch.Generator().manual_seed(seed)  # segments
    torch.manual_seed(seed + 1)  # k-means, dead-code revival, quantizer dropout
    if state:
        gen.set_state(state["gen"])
        torch.set_rng_state(state["rng"])

    for si in range(first_stage, len(recipe.stages)):
        stage, cfg = recipe.stages[si], recipe.stages[si].train
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        for p in decoder.parameters():
            p.requires_grad_(stage.loss.train_decoder)
        for p in [*level.encoder.parameters(), *level.quantizer.parameters()]:
            p.requires_grad_(not stage.loss.decoder_only)
        params = [p for p in tok.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=cfg.lr, betas=(0.8, 0.99), weight_decay=cfg.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s, c=cfg: lr_lambda(s, c.warmup_steps, c.max_steps, c.min_lr_ratio))
        start = first_step if si == first_stage else 0
        if state and si == first_stage and start > 0:
            opt.load_state_dict(state["opt"])
            sched.load_state_dict(state["sched"])
        frames = round(stage.segment_seconds * base.sample_rate / hop / ALIGN) * ALIGN
        stft = MultiResolutionSTFTLoss(base.sample_rate, fft_sizes=stage.loss.fft_sizes)

        def save(step: int, done: bool) -> None:
            nxt = (si + 1, 0) if done else (si, step)
            torch.save({"level": level.state_dict(), "decoder": decoder.state_dict(), "stage": nxt[0],
                        "step": nxt[1], "opt": opt.state_dict(), "sched": sched.state_dict(),
                        "gen": gen.get_state(), "rng": torch.get_rng_state()}, run / "state.tmp")
            (run / "state.tmp").replace(state_path)

        level.train()
        if stage.loss.decoder_only:
            level.encoder.eval()
            level.quantizer.eval()  # no EMA update, no revival: the codebooks stay
        with Progress(run, cfg, f"{recipe.name} stage {si + 1}/{len(recipe.stages)}", start, cfg.max_steps,
                      show=progress) as bar:
            for step in range(start + 1, cfg.max_steps + 1):
                z, e, audio = draw_batch(data, hop, cfg.batch_size, frames, gen)
                row = {"stage": torch.tensor(float(si + 1))}
                if stage.loss.decoder_only:
                    with torch.no_grad():
                        codes = level.encode(z)
                    out = level.decode(codes, level.quantizer.draw_prefixes(len(z)))
                    commit = torch.zeros(())
                else:
                    out, q = level(z)
                    commit = q.commit_loss
                    row |= {"commit": commit.detach(), "perplexity": q.perplexity.mean()}
                scale = level.std[:, None]
                latent = F.mse_loss(out / scale, e / scale)
                loss = stage.loss.latent * latent + commit
                row["latent"] = latent.detach()
                if stage.loss.stft > 0 or stage.loss.l1 > 0:
                    wave = decoder(out)
                    spec, l1 = stft(wave, audio), waveform_l1(wave, audio)
                    loss = loss + stage.loss.stft * spec + stage.loss.l1 * l1
                    row |= {"stft": spec.detach(), "l1": l1.detach()}
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                opt.step()
                sched.step()
                bar.train(step, row, sched.get_last_lr()[0])
                if bar.due(step, cfg.valid_every):
                    bar.valid(step, validate(tok, valid, recipe.data.valid_pieces))
                    level.train()
                if bar.due(step, cfg.save_every):
                    save(step, step == cfg.max_steps)
        out_dir = run / f"stage{si + 1}"
        out_dir.mkdir(parents=True, exist_ok=True)
        done_steps = sum(s.train.max_steps for s in recipe.stages[: si + 1])
        info = {"recipe": recipe.name, "step": done_steps, "stage": si + 1, "base": recipe.base}
        save_tokenizer(tok.eval(), out_dir / TOKENIZER_FILE, train_info=info)
        save_tokenizer(tok, run / TOKENIZER_FILE, train_info=info)
    return tok.eval()


@torch.no_grad()
def validate(tok: Stacked, valid: dict, pieces: int, max_frames: int = 8 * 320) -> dict[str, float]:
    """Per codebook prefix n (1, 2, 4, ..., Q): latent MSE (std units) and log-mel distance of the decoded audio,
    on the first `pieces` files (each cut to max_frames latent frames)."""
    level, hop = tok.level, tok.downsample[0] // tok.level.stride
    level.eval()
    stft = MultiResolutionSTFTLoss(tok.sample_rate)
    offsets = valid["frames"]
    k = min(pieces, len(offsets) - 1)
    prefixes = sorted({2**i for i in range(int(math.log2(level.quantizer.codebooks)) + 1)}
                      | {level.quantizer.codebooks})
    out = {}
    for n in prefixes:
        lat = mel = 0.0
        for i in range(k):
            a = int(offsets[i])
            b = min(int(offsets[i + 1]), a + max_frames)
            b = a + (b - a) // level.stride * level.stride
            y = level.decode(level.encode(valid["z"][None, :, a:b], n))
            e = valid["e"][None, :, a:b]
            lat += float(F.mse_loss(y / level.std[:, None], e / level.std[:, None]))
            mel += float(stft.terms(tok.decoder(y), valid["audio"][None, None, a * hop : b * hop])["log_mel"])
        out[f"latent_{n}"], out[f"log_mel_{n}"] = lat / k, mel / k
    return out
