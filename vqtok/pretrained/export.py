"""`python -m vqtok.pretrained.export RUN NAME --card card.yaml`: add a trained run to the shipped models.

RUN is a tokenizer run (tokenizer.safetensors + recipe.yaml) or a prior run (prior.safetensors +
recipe.yaml + its tokenizer copy). The tool

1. checks that the recipe file named in the card (default recipes/RECIPE_NAME.yaml) builds exactly the
   architecture of the weights, so `vqtok train` on it rebuilds the model;
2. rounds the weights (parameters and codebooks; the quantizer's EMA statistics stay fp32) to fp16 and
   measures both versions on the recipe's test split: a tokenizer's round trip (MSE/PSNR for images,
   SI-SNR and log-mel distance for audio, and how many codes agree), a prior's NLL per code;
3. stores fp16 when the change is within `TOLERANCE` (`--dtype auto`), else fp32;
4. writes vqtok/pretrained/NAME.safetensors with the config, the recipe (YAML) and the card (JSON: what
   card.yaml says about the data, licences and quality, plus everything measured or read off the model).
   A tokenizer that replaces NAME and makes its codes (a decoder-only update) lists the replaced file's
   fingerprint, and those it listed, as ``same_codes_as``: token files of the earlier versions decode with it.
   ``--same-codes-as OLD.safetensors`` adds an earlier version by hand (one from git history), checked alike.

A prior is exported after its tokenizer: its record of the tokenizer is pointed at the shipped tokenizer
exported from the same run (same fingerprint, or the card's ``storage.source_fingerprint``), so
`vqtok sample NAME` decodes with it. card.yaml (strict keys)::

    description: General read English speech at 16 kHz, 1.6 kbit/s.
    recipe: recipes/speech_16k.yaml        # optional; default recipes/RECIPE_NAME.yaml
    training_data:
      - {name: LibriSpeech train-clean-100 (251 readers), licence: CC BY 4.0,
         attribution: "V. Panayotov et al., LibriSpeech: an ASR corpus ..., ICASSP 2015", url: https://www.openslr.org/12}
    quality: {split: speech/test (LibriSpeech test-other), stoi: 0.85, pesq_wb: 2.1}  # figures measured elsewhere
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import math
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from vqtok.config import differences, from_dict, load_yaml, to_dict
from vqtok.errors import VqtokError
from vqtok.evaluate import evaluate, iter_recipe
from vqtok.modality import modality_of
from vqtok import registry
from vqtok.prior.checkpoint import load_prior, save_prior
from vqtok.prior.data import load_or_encode
from vqtok.prior.networks import DERIVED_FIELDS, NETWORKS
from vqtok.prior.recipe import load_prior_recipe
from vqtok.tokenizer.checkpoint import (TOKENIZER_FILE, architecture, codes_fingerprint, load_tokenizer,
                                        save_tokenizer)
from vqtok.tokenizer.codes import tokenizer_summary
from vqtok.tokenizer.recipe import load_recipe
from vqtok.tokenizer.train_latent import LatentLevelRecipe, load_latent_recipe, stacked_config

RECIPE_FILE = "recipe.yaml"
PRIOR_FILE = "prior.safetensors"
# fp16 storage is taken when the measured change stays within these (relative for MSE and log-mel,
# absolute dB for SI-SNR and PSNR, absolute nats per code for a prior's NLL).
TOLERANCE = {"mse": 0.005, "log_mel_distance": 0.005, "si_snr": 0.05, "psnr": 0.05, "nll": 0.002}
RELATIVE = ("mse", "log_mel_distance")


@dataclass
class DataSource:
    """One training corpus: what it is, its licence and the attribution the licence asks for."""

    name: str
    licence: str
    attribution: str = ""
    url: str | None = None


@dataclass
class CardInput:
    """What a person writes about a model (card.yaml); everything else is measured or read off the weights."""

    description: str
    training_data: list[DataSource]
    recipe: str | None = None  # the recipe file that rebuilds the model (default recipes/RECIPE_NAME.yaml)
    quality: dict = field(default_factory=dict)  # figures measured elsewhere (bench/), shown as given
    tokenizer: str | None = None  # priors: the shipped tokenizer they model (default: found by fingerprint)


def load_card_input(path: str | Path) -> CardInput:
    try:
        return from_dict(CardInput, load_yaml(path))
    except VqtokError as err:
        raise VqtokError(f"{path}: {err}") from None


# ----------------------------------------------------------------------------- shared checks
def half_names(model: torch.nn.Module) -> frozenset[str]:
    """Tensors stored as fp16: the parameters and the codebooks (not the EMA statistics, kept for fine-tuning)."""
    names = {n for n, p in model.named_parameters() if p.is_floating_point()}
    names |= {n for n, b in model.named_buffers() if n.split(".")[-1] == "codebook"}
    return frozenset(names)


def rounded(model: torch.nn.Module, names: frozenset[str]) -> torch.nn.Module:
    """A copy of `model` whose `names` tensors went through fp16 (what loading the shipped file gives)."""
    out = copy.deepcopy(model)
    state = {k: v.half().float() if k in names else v for k, v in model.state_dict().items()}
    out.load_state_dict(state)
    return out.eval()


def within_tolerance(ref: dict[str, float], new: dict[str, float]) -> bool:
    for key, tol in TOLERANCE.items():
        if key in ref and key in new:
            change = abs(new[key] - ref[key]) / (abs(ref[key]) if key in RELATIVE else 1.0)
            if not change <= tol:
                return False
    return True


def run_files(run: Path, default: str, what: str) -> tuple[Path, Path]:
    """(model file, the recipe.yaml beside it) of a run folder or a model file."""
    file = run / default if run.is_dir() else run
    for path in (file, file.parent / RECIPE_FILE):
        if not path.is_file():
            raise VqtokError(f"{path}: no such file; export a {what} run folder written by vqtok train")
    return file, file.parent / RECIPE_FILE


def parameter_count(model: torch.nn.Module) -> int:
    return int(sum(p.numel() for p in model.parameters()))


# ----------------------------------------------------------------------------- tokenizers
def load_tokenizer_recipe(recipe_file: Path):
    """A tokenizer recipe, or a latent_level one (a level stacked on a shipped tokenizer)."""
    raw = load_yaml(recipe_file)
    return load_latent_recipe(raw) if raw.get("task") == "latent_level" else load_recipe(recipe_file)


def recipe_model_config(recipe_file: Path):
    """The tokenizer config a recipe builds: its `model`, or a latent_level recipe's level stacked on its base."""
    recipe = load_tokenizer_recipe(recipe_file)
    if isinstance(recipe, LatentLevelRecipe):
        return stacked_config(load_tokenizer(recipe.base).config, recipe.level, recipe.quantizer)
    return recipe.model


def tokenizer_recipe_check(recipe_file: Path, config: dict[str, Any]) -> None:
    """The recipe file must build this tokenizer's architecture."""
    mismatch = differences(architecture(to_dict(recipe_model_config(recipe_file))), architecture(config))
    if mismatch:
        raise VqtokError(f"{recipe_file}: does not build the exported tokenizer ({'; '.join(mismatch[:3])})")


def measure_tokenizer(tok, recipe_file: Path, items: int | None, full: bool) -> dict[str, Any]:
    """Round-trip metrics on the first `items` of the recipe's test split (vqtok eval's protocol)."""
    result = evaluate(tok, iter_recipe(tok, recipe_file, items), with_pesq=full and _has("pesq"),
                      with_stoi=full and _has("pystoi"))
    return {"items": result["items"], **{k: float(f"{v:.5g}") for k, v in result["metrics"].items()}}


def code_agreement(a, b, recipe_file: Path, items: int) -> float:
    """Fraction of codes two tokenizers agree on over the first `items` of the test split."""
    same = total = 0
    with torch.no_grad():
        for _, x in iter_recipe(a, recipe_file, items):
            ca, cb = a.encode(torch.from_numpy(x)), b.encode(torch.from_numpy(x))
            for la, lb in zip(ca if isinstance(ca, list) else [ca], cb if isinstance(cb, list) else [cb]):
                same += int((la == lb).sum())
                total += la.numel()
    return same / max(total, 1)


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def tokenizer_card(tok, recipe, name: str) -> dict[str, Any]:
    """What is read off a tokenizer and its recipe: modality, rates, codebooks, bitrate, parameters."""
    modality = modality_of(tok.config)
    card: dict[str, Any] = {"name": name, "kind": "tokenizer", "modality": modality.name,
                            "codebooks": list(tok.codebook_size), "parameters": parameter_count(tok)}
    card.update(modality.shipped_card(tok, recipe.data))
    return card


def export_tokenizer(run: Path, name: str, card_in: CardInput, out: Path, dtype: str, items: int | None,
                     echo, same_codes_as: tuple[Path, ...] = ()) -> Path:
    file, recipe_path = run_files(run, TOKENIZER_FILE, "tokenizer")
    src = load_tokenizer(file)
    recipe = load_tokenizer_recipe(recipe_path)
    repo_recipe = Path(card_in.recipe or f"recipes/{recipe.name}.yaml")
    tokenizer_recipe_check(repo_recipe, to_dict(src.config))
    target = out / f"{name}{registry.SUFFIX}"
    echo(f"{file}: tokenizer {src.fingerprint}, {parameter_count(src):,} parameters; {repo_recipe} builds it")

    names = half_names(src)
    half = rounded(src, names)
    for candidate in (half, src):  # a hand-given earlier version that fits neither storage fails before measuring
        try:
            earlier_same_codes(target, candidate, same_codes_as)
            break
        except VqtokError:
            if candidate is src:
                raise
    echo("measuring fp32 and fp16 weights on the recipe's test split ...")
    ref = measure_tokenizer(src, recipe_path, items, full=False)
    new = measure_tokenizer(half, recipe_path, items, full=True)
    agree = code_agreement(src, half, recipe_path, min(items or 100, 100))
    use_half = dtype == "float16" or (dtype == "auto" and within_tolerance(ref, new))
    echo(f"  fp32: {ref}\n  fp16: {new}\n  codes agreeing: {agree:.4%} -> storing {'fp16' if use_half else 'fp32'}")
    model = half if use_half else src
    quality = new if use_half else {**ref, **measure_tokenizer(src, recipe_path, items, full=True)}
    card = {**tokenizer_card(src, recipe, name), "description": card_in.description,
            "training_data": [to_dict(s) for s in card_in.training_data],
            "recipe": repo_recipe.as_posix(), "step": src.train_info.get("step"),
            "quality": {"split": f"test split of {repo_recipe.name} (first {quality['items']} items)", **quality},
            "reported": dict(card_in.quality),
            "storage": {"dtype": "float16" if use_half else "float32", "source_fingerprint": src.fingerprint,
                        "fp32_quality": ref, "codes_agreeing_with_fp32": round(agree, 5)}}
    earlier = earlier_same_codes(target, model, same_codes_as)
    if earlier:
        echo(f"  {target.name} is replaced by a model with the same codes: token files of {', '.join(earlier)} "
             "decode with it")
    out.mkdir(parents=True, exist_ok=True)
    extra = {"card": json.dumps(card, sort_keys=True), "recipe": recipe_path.read_text(),
             **({"same_codes_as": json.dumps(earlier)} if earlier else {})}
    fp = save_tokenizer(model, target, train_info=src.train_info, half=names if use_half else frozenset(),
                        extra=extra)
    check = load_tokenizer(target)
    assert check.fingerprint == fp  # the stored header and the stored tensors agree
    return target


def earlier_same_codes(target: Path, model, files: tuple[Path, ...] = ()) -> list[str]:
    """The fingerprints of earlier versions whose token files `model` can take over: the shipped file `target`
    it replaces, when it makes its codes (a decoder-only update, or the same weights with a setting outside the
    codes fingerprint changed), and each of `files` (given by hand, so one with other codes is an error), with
    those they listed."""
    found: list[str] = []
    for path in ([target] if target.is_file() else []) + list(files):
        try:
            old = load_tokenizer(path)
        except VqtokError:
            if path == target:
                continue  # an unreadable file is simply replaced
            raise
        if old.codes_fingerprint != codes_fingerprint(model):
            if path == target:
                continue
            raise VqtokError(f"{path}: makes other codes than the exported model (its encoder or codebook "
                             "differ), so its token files cannot be taken over")
        same = to_dict(old.config) == to_dict(model.config) and all(
            torch.equal(a, b) for a, b in zip(old.state_dict().values(), model.state_dict().values()))
        found += [*([] if same else [old.fingerprint]), *old.same_codes_as]
    return list(dict.fromkeys(found))


# ----------------------------------------------------------------------------- priors
def shipped_tokenizer_for(fingerprint: str, out: Path, name: str | None) -> Path:
    """The shipped tokenizer exported from the tokenizer with `fingerprint` (or that is it)."""
    candidates = [out / f"{name}{registry.SUFFIX}"] if name else sorted(out.glob(f"*{registry.SUFFIX}"))
    for path in candidates:
        if not path.is_file():
            raise VqtokError(f"{path}: no such shipped tokenizer; export the tokenizer first")
        meta = registry.header(path)
        if meta.get("format") != "vqtok.tokenizer":
            continue
        source = json.loads(meta.get("card") or "{}").get("storage", {}).get("source_fingerprint")
        if fingerprint in (meta.get("fingerprint"), source):
            return path
        if name:
            raise VqtokError(f"{path}: was exported from tokenizer {source}, but the prior models {fingerprint}")
    raise VqtokError(f"{out}: no shipped tokenizer was exported from tokenizer {fingerprint}, which the prior "
                     "models; export that tokenizer run first")


@torch.no_grad()
def prior_nll(prior, codes) -> float:
    """NLL in nats per code (EOS targets left out) of a single-level prior over a CodeSet."""
    nll = count = eos = 0.0
    items = 0
    for start in range(0, len(codes), 64):
        batch = codes.batch(list(range(start, min(start + 64, len(codes)))))
        labels = batch["labels"] if prior.layout.num_classes else None
        a, n, e = prior.nll(batch["codes"][0], labels, None, batch["lengths"][0])
        nll, count, eos = nll + float(a), count + int(n), eos + float(e)
        items += len(batch["labels"]) if prior.layout.eos else 0
    return (nll - eos) / max(count - items, 1)


def export_prior(run: Path, name: str, card_in: CardInput, out: Path, dtype: str, echo) -> Path:
    file, recipe_path = run_files(run, PRIOR_FILE, "single-level prior")
    prior = load_prior(file)
    recipe = load_prior_recipe(recipe_path)
    repo_recipe = Path(card_in.recipe or f"recipes/{recipe.name}.yaml")
    prior_recipe_check(repo_recipe, prior)
    if prior.layout.null_class:
        # The default guidance weight is a sampling setting, not a weight: the shipped prior takes the card
        # recipe's, which may have been chosen after training with bench/mnist_samples.py --guidance W.
        prior.layout.guidance = load_prior_recipe(repo_recipe).model.guidance
    src_tok = load_tokenizer(file.parent / TOKENIZER_FILE)
    if src_tok.fingerprint != prior.tokenizer.get("fingerprint"):
        raise VqtokError(f"{file.parent / TOKENIZER_FILE}: not the tokenizer the prior models")
    tok_path = shipped_tokenizer_for(src_tok.fingerprint, out, card_in.tokenizer)
    tok = load_tokenizer(tok_path)
    echo(f"{file}: {prior.layout.network} prior, {parameter_count(prior):,} parameters, over {tok_path.name}")

    names = half_names(prior)
    half = rounded(prior, names)
    cache = Path(recipe.data.cache) if recipe.data.cache else file.parent / "codes"
    test, _ = load_or_encode(src_tok, recipe.data, "test", cache)
    with tempfile.TemporaryDirectory() as tmp:
        shipped_codes, _ = load_or_encode(tok, recipe.data, "test", tmp)
    ref, new = {"nll": prior_nll(prior, test)}, {"nll": prior_nll(half, test)}
    use_half = dtype == "float16" or (dtype == "auto" and within_tolerance(ref, new))
    model = half if use_half else prior
    quality = {"nll": round(prior_nll(model, shipped_codes), 5), "items": len(shipped_codes)}
    quality["bits_per_code"] = round(quality["nll"] / math.log(2), 4)
    echo(f"  test NLL per code: fp32 {ref['nll']:.5f}, fp16 {new['nll']:.5f} nats; with {tok_path.stem}'s codes "
         f"{quality['nll']:.5f} -> storing {'fp16' if use_half else 'fp32'}")
    tok_card = json.loads(registry.header(tok_path).get("card") or "{}")
    card = {key: tok_card[key] for key in ("modality", "sample_rate", "image_size", "codebooks") if key in tok_card}
    card.update(name=name, kind="prior", tokenizer=tok_path.stem, network=prior.layout.network,
                classes=prior.layout.num_classes, parameters=parameter_count(prior),
                description=card_in.description, training_data=[to_dict(s) for s in card_in.training_data],
                recipe=repo_recipe.as_posix(), step=prior.train_info.get("step"),
                quality={"split": f"test split of {repo_recipe.name}, codes of {tok_path.stem}", **quality},
                reported=dict(card_in.quality),
                storage={"dtype": "float16" if use_half else "float32", "source_fingerprint": src_tok.fingerprint,
                         "fp32_nll": round(ref["nll"], 5), "fp16_nll": round(new["nll"], 5)})
    info = {k: v for k, v in prior.train_info.items() if k != "tokenizer_path"}
    target = out / f"{name}{registry.SUFFIX}"
    save_prior(model, target, tokenizer_summary(tok), train_info=info, half=names if use_half else frozenset(),
               extra={"card": json.dumps(card, sort_keys=True), "recipe": recipe_path.read_text()})
    load_prior(target, tokenizer=tok)  # readable, and it accepts the shipped tokenizer
    return target


def prior_recipe_check(recipe_file: Path, prior) -> None:
    """The recipe file must name the same network, size and conditioning as the prior's weights."""
    recipe = load_prior_recipe(recipe_file)
    stored = {k: v for k, v in prior.config.items() if k not in DERIVED_FIELDS}
    _, config_cls = NETWORKS[recipe.model.network]
    built = {k: v for k, v in to_dict(config_cls(num_codes=2, **recipe.model.config)).items() if k not in DERIVED_FIELDS}
    mismatch = differences(built, stored)
    if recipe.model.network != prior.layout.network:
        mismatch.insert(0, f"model.network: {recipe.model.network!r} != {prior.layout.network!r}")
    if recipe.model.class_conditional != bool(prior.layout.num_classes):
        mismatch.append(f"model.class_conditional: {recipe.model.class_conditional} but the prior has "
                        f"{prior.layout.num_classes} classes")
    if mismatch:
        raise VqtokError(f"{recipe_file}: does not build the exported prior ({'; '.join(mismatch[:3])})")


# ----------------------------------------------------------------------------- command line
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vqtok.pretrained.export", description=__doc__.split("\n")[0])
    parser.add_argument("run", type=Path, help="tokenizer or prior run folder (or its .safetensors)")
    parser.add_argument("name", help="shipped name, e.g. speech-16k")
    parser.add_argument("--card", type=Path, required=True, help="card.yaml: description, training data, quality")
    parser.add_argument("--out", type=Path, default=registry.MODELS_DIR, help="models folder (default: the package's)")
    parser.add_argument("--dtype", choices=["auto", "float16", "float32"], default="auto",
                        help="auto: fp16 when the measured change is within tolerance")
    parser.add_argument("--items", type=int, default=None, help="test items to measure on (default: the recipe's "
                        "data.valid_items)")
    parser.add_argument("--force", action="store_true", help="replace an existing NAME.safetensors")
    parser.add_argument("--same-codes-as", type=Path, action="append", default=[], metavar="FILE",
                        help="an earlier version of the tokenizer with the same codes (repeatable): its token "
                        "files decode with the new one (the replaced NAME is checked and listed by itself)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice; "
                        "1 when other work shares the cores, where 2 threads measured 2.3x slower on 2 cores)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        if args.threads is not None:
            if args.threads < 1:
                raise VqtokError(f"--threads {args.threads}: must be at least 1")
            torch.set_num_threads(args.threads)
        if not args.name.replace("-", "").replace("_", "").isalnum():
            raise VqtokError(f"'{args.name}': a shipped name is letters, digits, '-' and '_'")
        target = args.out / f"{args.name}{registry.SUFFIX}"
        if target.exists() and not args.force:
            raise VqtokError(f"{target}: already exists; pass --force to replace it")
        card_in = load_card_input(args.card)
        echo = lambda line: print(line, file=sys.stderr)  # noqa: E731
        folder = args.run if args.run.is_dir() else args.run.parent
        is_prior = (folder / PRIOR_FILE).is_file() or args.run.name == PRIOR_FILE
        if is_prior and args.same_codes_as:
            raise VqtokError("--same-codes-as applies to tokenizers; a prior follows its tokenizer")
        if is_prior:
            target = export_prior(args.run, args.name, card_in, args.out, args.dtype, echo)
        else:
            target = export_tokenizer(args.run, args.name, card_in, args.out, args.dtype, args.items, echo,
                                      tuple(args.same_codes_as))
    except VqtokError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    model = registry.header(target)
    card = json.loads(model["card"])
    print(f"wrote {target} ({target.stat().st_size / 1e6:.2f} MB, {card['storage']['dtype']}) in "
          f"{time.perf_counter() - start:.0f} s; "
          f"card:\n{yaml.safe_dump(card, sort_keys=False)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
