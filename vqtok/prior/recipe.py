"""Prior recipe schema: dataclasses that a `task: prior` recipe YAML maps onto one to one."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from vqtok.config import apply_overrides, from_dict, load_yaml
from vqtok.data.build import DataSource
from vqtok.errors import VqtokError
from vqtok.prior.networks import DERIVED_FIELDS, NETWORKS
from vqtok.run import TrainConfig

LEVELS = ("all", "codes", "top", "bottom")


@dataclass
class PriorModelConfig:
    """Which network models each level, and its size. `config` holds that network's config fields
    (`PixelCNNConfig` or `TransformerConfig`) except the ones the tokenizer and data fix:
    num_codes, num_classes, cond_codes, cond_ratio."""

    network: str = "pixelcnn"  # pixelcnn | transformer (older recipes: model.kind)
    class_conditional: bool = False  # condition on the data's labels (MNIST digits, FSDD spoken digits)
    # classifier-free guidance (Ho & Salimans 2022): each training label is replaced by a null class with this
    # probability, so the same network also learns the unconditional model
    cond_dropout: float = 0.0
    guidance: float = 1.0  # default weight w of vqtok sample: logits l_u + w (l_c - l_u); 1 = conditional only
    # audio: read sequences longer than config.max_len in windows of max_len codes, each next window re-reading
    # this many codes of the last as its context (training cuts random windows); no EOS: token files know their
    # length, samples are drawn to one. None: every sequence fits one window, and ends with EOS (one codebook)
    context: int | None = None
    config: dict = field(default_factory=dict)


@dataclass
class PriorDataConfig(DataSource):
    """The data the frozen tokenizer encodes (training split for training, test split for validation), or with
    kind `codes` the manifest.jsonl of a folder `vqtok encode` wrote (root), split by `rule` on its file names."""

    max_items: int | None = None  # keep the first items of the training split (tests, quick runs)
    shifts: int = 0  # images: also train on every training image shifted by up to this many pixels in x and y;
    # audio: also train on every training clip delayed by 1..shifts of (shifts + 1) equal parts of a code's hop
    valid_items: int | None = None  # first items of the test split to validate on (None: all of it)
    cache: str | None = None  # folder for the encoded codes (default: RUN/codes)


@dataclass
class PriorRecipe:
    """A prior recipe: the tokenizer whose codes are modelled, the network, the data and the loop."""

    name: str = "prior"
    task: str = "prior"
    tokenizer: str = ""  # tokenizer .safetensors, or a run folder holding tokenizer.safetensors
    level: str = "all"  # all: every level of the tokenizer (VQ-VAE-2: top and bottom, trained together)
    model: PriorModelConfig = field(default_factory=PriorModelConfig)
    data: PriorDataConfig = field(default_factory=PriorDataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    samples: int = 16  # samples drawn and decoded at each validation (PNG grid / WAVs under RUN/samples)


def check_model(model: PriorModelConfig, where: str = "model") -> None:
    """The network exists and `config` holds only that network's own fields, with the right types."""
    if model.network not in NETWORKS:
        raise VqtokError(f"unknown {where}.network '{model.network}'; choose one of {', '.join(NETWORKS)}")
    derived = sorted(set(model.config) & set(DERIVED_FIELDS))
    if derived:
        raise VqtokError(f"{where}.config.{derived[0]} is set by the tokenizer and the data, not the recipe; "
                         f"remove it (use {where}.class_conditional for classes)")
    _, config_cls = NETWORKS[model.network]
    from_dict(config_cls, {"num_codes": 2, **model.config}, f"{where}.config")  # strict keys and types
    if not 0.0 <= model.cond_dropout < 1.0:
        raise VqtokError(f"{where}.cond_dropout must be in [0, 1), got {model.cond_dropout}")
    if model.cond_dropout > 0 and not model.class_conditional:
        raise VqtokError(f"{where}.cond_dropout drops the class label: it needs {where}.class_conditional: true")
    if model.context is not None and not 0 < model.context < model.config.get("max_len", 1024):
        raise VqtokError(f"{where}.context must be in 1..max_len - 1 (codes a window re-reads), got {model.context}")
    if model.guidance < 0:
        raise VqtokError(f"{where}.guidance must be >= 0, got {model.guidance}")
    if model.guidance != 1.0 and model.cond_dropout <= 0:
        raise VqtokError(f"{where}.guidance {model.guidance} needs an unconditional model: set {where}.cond_dropout "
                         "(e.g. 0.1) or guidance 1")


def load_prior_recipe(path: str | Path, overrides: list[str] | None = None) -> PriorRecipe:
    """Strictly load a prior recipe; errors name the file and the offending key."""
    return parse_prior_recipe(apply_overrides(load_yaml(path), list(overrides or [])), path)


def with_network(data: dict) -> dict:
    """`data` with an older recipe's `model.kind` (the network, before it had its own word) as `model.network`."""
    model = data.get("model")
    if not isinstance(model, dict) or "kind" not in model:
        return data
    if "network" in model:
        raise VqtokError("model.kind is the older name of model.network; give one of them")
    return {**data, "model": {("network" if key == "kind" else key): value for key, value in model.items()}}


def parse_prior_recipe(data: dict, path: str | Path) -> PriorRecipe:
    """A prior recipe from its YAML already read (overrides applied); errors name `path` and the key."""
    try:
        recipe = from_dict(PriorRecipe, with_network(data))
        if recipe.task != "prior":
            raise VqtokError(f"task is '{recipe.task}', expected 'prior'")
        if recipe.level not in LEVELS:
            raise VqtokError(f"unknown level '{recipe.level}'; choose one of {', '.join(LEVELS)}")
        check_model(recipe.model)
    except VqtokError as err:
        raise VqtokError(f"{path}: {err}") from None
    return recipe
