"""One validated config per trial: flat dotted keys outside (what Ray Tune, Optuna and Parquet see), typed sections inside.

Keys are `section.name` (sections: data, generator, augment, classifier, train) plus `seed`. Each section has common
parameters declared here, and the registry entry it selects (a generator type, a backbone, a mixing policy) declares
its own. `resolve()` checks every key and value, fills defaults and returns a `TrialConfig`; its `flat()` is the dict
stored with every result row and checkpoint.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from fercore.errors import ConfigError


@dataclass(frozen=True)
class Param:
    """One hyperparameter: its name inside the section, default, and what values are valid."""

    name: str
    default: Any
    low: float | None = None
    high: float | None = None
    choices: tuple | None = None
    help: str = ""

    @property
    def kind(self) -> type:
        return type(self.default)

    def valid_text(self) -> str:
        if self.choices is not None:
            return "one of " + ", ".join(map(str, self.choices))
        if self.low is not None or self.high is not None:
            return f"a {self.kind.__name__} in [{self.low}, {self.high}]"
        return f"a {self.kind.__name__}"

    def coerce(self, key: str, value: Any) -> Any:
        """Convert VALUE (possibly a string from the command line) to this parameter's type and check its range."""
        kind = self.kind
        try:
            if kind is bool:
                value = _to_bool(value)
            elif kind is int:
                if isinstance(value, float) and not value.is_integer():
                    raise ValueError
                if isinstance(value, bool):
                    raise ValueError
                value = int(value)
            elif kind is float:
                if isinstance(value, bool):
                    raise ValueError
                value = float(value)
                if not math.isfinite(value):
                    raise ValueError
            else:
                value = str(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected {self.valid_text()}, got {value!r}") from None
        if self.choices is not None and value not in self.choices:
            raise ConfigError(f"{key}: expected {self.valid_text()}, got {value!r}")
        if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
            raise ConfigError(f"{key}: expected {self.valid_text()}, got {value!r}")
        return value


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.lower() in ("true", "yes", "1", "on", "false", "no", "0", "off"):
        return value.lower() in ("true", "yes", "1", "on")
    raise ValueError


# Common parameters of each section. The selector of a registry section ("generator.type", ...) is added below.
SEED = Param("seed", 0, 0, 2**31 - 1, help="seeds the generator, the mixing and the classifier of the trial")
DATA = (
    Param("source", "procedural", help="'procedural', a FER2013 .csv, a class-per-folder tree or a RAF-DB folder"),
    Param("scale", 0.1, 0.001, 10.0, help="procedural set size as a multiple of FER2013's class counts"),
    Param("seed", 0, 0, 2**31 - 1, help="seeds the procedural drawing and carved validation splits, fixed per sweep"),
    Param("image_size", 48, 16, 256, help="side of the square grayscale images, pixels"),
    Param("val_fraction", 0.1, 0.01, 0.5, help="share of training images carved out for validation where a layout has none"),
)
GENERATOR = (  # Every type has a budget and a batch; the rest (learning rates, latent size, ...) each type declares.
    Param("epochs", 5, 0, 10_000, help="generator training budget, passes over the training split"),
    Param("batch_size", 64, 2, 4096),
)
AUGMENT = (  # The policy (augment.policy) says how many synthetic images; the filter, which ones are good enough.
    Param("filter", "none", choices=("none", "classifier_confidence", "discriminator"),
          help="quality filter for synthetic images: the reference classifier's confidence in the conditioned class, "
               "or the generator's discriminator; rejected images are replaced by over-generating"),
    Param("filter_tau", 0.5, 0.0, 1.0, help="a synthetic image is kept when its filter score is >= this"),
    Param("filter_rounds", 5, 1, 50, help="over-generation rounds per class before a short class is an error"),
    Param("paired_baseline", True, help="pair a trial that uses synthetic images with the real-only baseline of the "
                                        "same classifier config and seed (cached), and record the uplift over it"),
)
CLASSIFIER = (
    Param("lr", 1e-3, 1e-6, 1.0, help="classifier learning rate"),
    Param("epochs", 5, 1, 1000, help="classifier training epochs"),
    Param("batch_size", 64, 2, 8192),
    Param("weight_decay", 0.0, 0.0, 1.0),
    Param("dropout", 0.5, 0.0, 0.95, help="dropout before the classifier head"),
    Param("optimizer", "adam", choices=("adam", "adamw", "sgd"), help="sgd uses classifier.momentum"),
    Param("momentum", 0.9, 0.0, 0.999, help="SGD momentum"),
    Param("schedule", "none", choices=("none", "cosine", "onecycle", "plateau"),
          help="learning-rate schedule; plateau halves it when validation loss stalls for 2 epochs (002)"),
    Param("label_smoothing", 0.0, 0.0, 0.5),
    Param("class_weights", False, help="weight the loss by w_c = (1/n_c) / sum_k(1/n_k) * K (003)"),
    Param("patience", 0, 0, 1000, help="stop after this many epochs without improvement; 0 never stops early"),
    Param("early_stop", "val_macro_f1", choices=("val_macro_f1", "val_loss"),
          help="what early stopping and the kept epoch are judged by"),
)
TRAIN = (
    Param("flip", 0.5, 0.0, 1.0, help="probability of a horizontal flip per training image"),
    Param("translate", 2, 0, 16, help="largest random shift per training image, pixels"),
    Param("rotate", 0.0, 0.0, 45.0, help="largest random rotation, degrees either way (003 used 15)"),
    Param("crop", 0.0, 0.0, 0.9, help="random resized crop: up to this share of the area is cut away"),
    Param("erase", 0.0, 0.0, 1.0, help="probability of erasing one random rectangle per image"),
    Param("compile", False, help="torch.compile the classifier (worth it on a GPU for long trials)"),
    Param("device", "auto", choices=("auto", "cpu", "cuda"), help="auto: CUDA when present, else CPU"),
    Param("precision", "auto", choices=("auto", "fp32", "bf16"), help="autocast: auto is bf16 on CUDA, fp32 on CPU"),
    Param("threads", 0, 0, 256, help="torch CPU threads; 0 leaves torch's default"),
)

# section -> (selector param name, registry loader). Loaders import lazily so `config` has no heavy imports.
SELECTORS = {
    "generator": ("type", "fercore.generators", "GENERATORS", "cgan"),
    "augment": ("policy", "fercore.augment.policies", "POLICIES", "none"),
    "classifier": ("backbone", "fercore.classifiers", "CLASSIFIERS", "cnn3"),
}
COMMON = {"data": DATA, "generator": GENERATOR, "augment": AUGMENT, "classifier": CLASSIFIER, "train": TRAIN}


def registry(section: str):
    import importlib

    _, module, attr, _ = SELECTORS[section]
    return getattr(importlib.import_module(module), attr)


def section_params(section: str, choice: str | None) -> tuple[Param, ...]:
    """Every parameter a section has when its registry entry is CHOICE: the common ones, then the entry's own."""
    params = COMMON[section]
    if section in SELECTORS and choice is not None:
        entry = registry(section).get(choice)
        own = tuple(getattr(entry, "params", ()))
        overridden = {p.name for p in own}
        params = tuple(p for p in params if p.name not in overridden) + own
    return params


@dataclass(frozen=True)
class Section:
    """The resolved values of one section; attribute access (cfg.generator.lr_g) for code, `values` for storage."""

    name: str
    values: Mapping[str, Any] = field(default_factory=dict)

    def __getattr__(self, item: str) -> Any:
        try:
            return self.values[item]
        except KeyError:
            raise AttributeError(f"{self.name}.{item} is not a parameter of this config") from None


@dataclass(frozen=True)
class TrialConfig:
    seed: int
    data: Section
    generator: Section
    augment: Section
    classifier: Section
    train: Section

    def flat(self) -> dict[str, Any]:
        """The flat dotted-key dict: what is stored with every result row and checkpoint."""
        out: dict[str, Any] = {"seed": self.seed}
        for name in COMMON:
            section: Section = getattr(self, name)
            out.update({f"{name}.{k}": v for k, v in section.values.items()})
        return out


def all_keys() -> dict[str, list[str]]:
    """Every key any registered entry declares, mapped to the entries it applies to ('*' for common keys)."""
    keys: dict[str, list[str]] = {"seed": ["*"]}
    for section, params in COMMON.items():
        for p in params:
            keys.setdefault(f"{section}.{p.name}", []).append("*")
        if section in SELECTORS:
            sel = SELECTORS[section][0]
            keys.setdefault(f"{section}.{sel}", []).append("*")
            for name, entry in registry(section).items():
                for p in getattr(entry, "params", ()):
                    keys.setdefault(f"{section}.{p.name}", []).append(name)
    return keys


def resolve(flat: Mapping[str, Any], *, drop_inapplicable: bool = False) -> TrialConfig:
    """Validate a flat config and fill its defaults.

    Every problem is collected and raised together as one ConfigError naming each key and what was expected.
    A key that belongs only to entries other than the selected one (generator.latent_dim with a diffusion model)
    is an error, unless drop_inapplicable: sweeps set it because their fixed values serve several choices.
    """
    errors: list[str] = []
    known = all_keys()
    for key in flat:
        if key not in known:
            errors.append(f"{key}: unknown key; valid keys: {', '.join(sorted(known))}")
    values: dict[str, dict[str, Any]] = {}
    for section in COMMON:
        choice = None
        if section in SELECTORS:
            sel, _, _, default = SELECTORS[section]
            key = f"{section}.{sel}"
            choice = str(flat.get(key, default))
            reg = registry(section)
            if choice not in reg:
                errors.append(f"{key}: unknown {reg.kind} {choice!r}; valid: {', '.join(reg.names())}")
                continue
            values[section] = {sel: choice}
        else:
            values[section] = {}
        params = section_params(section, choice)
        names = {p.name for p in params}
        for p in params:
            key = f"{section}.{p.name}"
            try:
                values[section][p.name] = p.coerce(key, flat[key]) if key in flat else p.default
            except ConfigError as e:
                errors.append(str(e))
        if section in SELECTORS:
            sel = SELECTORS[section][0]
            for key in flat:
                head, _, name = key.partition(".")
                if head == section and name != sel and name not in names and key in known and not drop_inapplicable:
                    owners = ", ".join(known[key])
                    errors.append(f"{key}: does not apply to {section}.{sel}={choice} (it applies to: {owners})")
    try:
        seed = SEED.coerce("seed", flat["seed"]) if "seed" in flat else SEED.default
    except ConfigError as e:
        errors.append(str(e))
        seed = SEED.default
    if errors:
        raise ConfigError("invalid config:\n  " + "\n  ".join(errors) if len(errors) > 1 else errors[0])
    return TrialConfig(seed=seed, **{name: Section(name, vals) for name, vals in values.items()})


def parse_assignments(items: Iterable[str]) -> dict[str, str]:
    """KEY=VALUE strings from the command line -> a flat dict of strings (resolve() converts the types)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"{item!r}: expected KEY=VALUE, e.g. classifier.backbone=cnn3")
        out[key.strip()] = value.strip()
    return out
