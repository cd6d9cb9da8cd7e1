"""Generation: a prior run's priors (top first) -> sampled codes, which the tokenizer's modality decodes."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import Tensor

from vqtok.errors import VqtokError
from vqtok.prior.checkpoint import PRIOR_FILES, check_tokenizer, load_prior, read_prior_metadata
from vqtok.prior.model import CodePrior
from vqtok import registry
from vqtok.tokenizer.checkpoint import TOKENIZER_FILE, load_tokenizer, locate_tokenizer, tokenizer_file


def find_prior_files(path: str | Path) -> list[Path]:
    """A prior run folder, one prior file or a shipped prior's name -> the prior files of every tokenizer
    level, top first. A path that exists wins over a name."""
    path = registry.lookup(path, "prior") or Path(path)
    if path.is_dir():
        folder = path
        present = [name for name, file in PRIOR_FILES.items() if (folder / file).is_file()]
        if not present:
            raise VqtokError(f"{path}: no prior here ({', '.join(PRIOR_FILES.values())}); "
                             "train one with vqtok train recipes/*_prior.yaml")
        level = "codes" if "codes" in present else present[0]
    else:
        meta = read_prior_metadata(path)
        level = json.loads(meta.get("layout", "{}")).get("level", "codes")
        folder = path.parent
        if level == "codes":
            return [path]
    if level == "codes":
        return [folder / PRIOR_FILES["codes"]]
    files = [folder / PRIOR_FILES["top"], folder / PRIOR_FILES["bottom"]]
    if path.is_file():
        files[0 if level == "top" else 1] = path
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise VqtokError(f"{path}: a two-level tokenizer needs a top and a bottom prior; {', '.join(missing)} "
                         f"is missing from {folder} (train it with level=all, top or bottom)")
    return files


def load_prior_run(path: str | Path, tokenizer: str | Path | None = None, device: str | torch.device = "cpu"):
    """(priors top first, tokenizer, tokenizer path). The tokenizer defaults to the copy in the run folder,
    then to the shipped tokenizer with the fingerprint the priors model, then to the path recorded at
    training; any tokenizer other than the one the priors model is refused."""
    files = find_prior_files(path)
    priors = [load_prior(f, device=device) for f in files]
    if tokenizer is None:
        copy = files[0].parent / TOKENIZER_FILE
        recorded = {**priors[0].tokenizer, "path": priors[0].train_info.get("tokenizer_path")}
        tokenizer = copy if copy.is_file() else locate_tokenizer(recorded, files[0])
    tok_path = tokenizer_file(tokenizer)
    tok = load_tokenizer(tok_path, device)
    for f, prior in zip(files, priors):
        check_tokenizer(prior, tok, f, tok_path)
    levels = [p.layout.level for p in priors]
    expected = ["codes"] if tok.levels == 1 else ["top", "bottom"]
    if levels != expected:
        raise VqtokError(f"{path}: priors for levels {levels}, but the tokenizer has levels {expected}")
    return priors, tok, tok_path


def draw_labels(prior: CodePrior, n: int, label: int | None, generator: torch.Generator | None) -> Tensor | None:
    """Labels for n samples: `label` for all, or for a class-conditional prior without one, draws from the
    training label frequencies p(y), so the samples follow the model's marginal p(x) = sum_y p(y) p(x | y)."""
    lay = prior.layout
    if not lay.num_classes:
        if label is not None:
            raise VqtokError(f"this prior is not class-conditional; drop --label {label}")
        return None
    if label is not None:
        if not 0 <= label < lay.num_classes:
            raise VqtokError(f"--label {label} is outside the prior's classes 0..{lay.num_classes - 1}")
        return torch.full((n,), label, dtype=torch.long)
    counts = torch.tensor(lay.class_counts or [1] * lay.num_classes, dtype=torch.float)
    return torch.multinomial(counts, n, replacement=True, generator=generator)


def check_guidance(priors: list[CodePrior], guidance: float | None) -> None:
    """Refuse a guidance weight w != 1 for a prior without the null class guidance needs."""
    if guidance is None or guidance == 1.0:
        return
    if guidance < 0:
        raise VqtokError(f"--guidance must be >= 0, got {guidance}")
    for prior in priors:
        lay = prior.layout
        if not lay.num_classes:
            raise VqtokError(f"guidance {guidance} mixes class-conditional and unconditional logits; this {lay.level} "
                             "prior is not class-conditional: use guidance 1")
        if not lay.null_class:
            raise VqtokError(f"guidance {guidance} needs a prior trained with model.cond_dropout > 0 (a null class); "
                             f"this {lay.level} prior has none: use guidance 1 or retrain it with cond_dropout")


def describe_guidance(priors: list[CodePrior], guidance: float | None) -> str:
    """The guidance weight sampling uses, as benches print it: the one given, else each recipe's."""
    if guidance is not None:
        return f"{guidance:g}"
    return ", ".join(f"{p.layout.guidance:g} (recipe)" for p in priors if p.layout.num_classes) or "none"


def sample_codes(priors: list[CodePrior], n: int, labels: Tensor | None = None, temperature: float = 1.0,
                 top_k: int | None = None, top_p: float | None = None, generator: torch.Generator | None = None,
                 batch_size: int | None = 64, guidance: float | None = None, max_length: int | None = None) -> list:
    """Codes per level, top first: (n, h, w) tensors for maps, lists of n (T_i,) or (Q, T) tensors for sequences.

    A bottom prior is sampled given the top codes just drawn (VQ-VAE-2 ancestral sampling). guidance: the
    classifier-free guidance weight of every class-conditional level (None: each prior's recipe default).
    max_length: codes of a top-level sequence (`CodePrior.sample`).
    """
    check_guidance(priors, guidance)
    levels: list = []
    for prior in priors:
        lab = labels if prior.layout.num_classes else None
        cond = levels[0] if prior.layout.level == "bottom" else None
        w = 1.0 if not prior.layout.num_classes else guidance
        length = max_length if cond is None else None
        levels.append(prior.sample(n, lab, cond, temperature, top_k, top_p, generator, batch_size=batch_size,
                                   guidance=w, max_length=length))
    return levels


def per_sample(levels: list, i: int) -> Tensor | list[Tensor]:
    """Sample i's codes: a tensor for one level, [top, bottom] for two."""
    item = [lv[i] for lv in levels]
    return item[0] if len(item) == 1 else item
