"""One validated config per trial: flat dotted keys outside (what Ray Tune, Optuna and Parquet see), typed sections inside.

Keys are `section.name` (sections: data, generator, augment, classifier, train) plus `seed`. Each section has common
parameters (declared in fercore.sections, a ground-floor module the report can read too), and the registry entry it selects (a generator type, a backbone, a mixing policy) declares
its own. `resolve()` checks every key and value, fills defaults and returns a `TrialConfig`; its `flat()` is the dict
stored with every result row and checkpoint.

The registries stand on fercore.params and this module on them: it imports them as any module would.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping, NamedTuple

from fercore.augment.policies import POLICIES, uses_generator
from fercore.classifiers import CLASSIFIERS
from fercore.errors import ConfigError
from fercore.generators import GENERATORS
from fercore.params import Param, Section
from fercore.registry import Registry
from fercore.sections import AUGMENT, CLASSIFIER, DATA, GENERATOR, SEED, TRAIN

__all__ = ["AUGMENT", "CLASSIFIER", "COMMON", "DATA", "GENERATOR", "SEED", "SELECTORS", "TRAIN", "Param", "Section",
           "Selector", "TrialConfig", "all_keys", "inapplicable", "parse_assignments", "registry", "resolve",
           "section_params"]


class Selector(NamedTuple):
    """The key of a section that picks its registry entry (generator.type), the registry, and the default entry."""

    param: str
    registry: Registry
    default: str


SELECTORS = {
    "generator": Selector("type", GENERATORS, "cgan"),
    "augment": Selector("policy", POLICIES, "none"),
    "classifier": Selector("backbone", CLASSIFIERS, "cnn3"),
}
COMMON = {"data": DATA, "generator": GENERATOR, "augment": AUGMENT, "classifier": CLASSIFIER, "train": TRAIN}


def registry(section: str) -> Registry:
    """The registry whose entry SECTION's selector names (generator -> GENERATORS)."""
    return SELECTORS[section].registry


def section_params(section: str, choice: str | None) -> tuple[Param, ...]:
    """Every parameter a section has when its registry entry is CHOICE: the common ones, then the entry's own."""
    params = COMMON[section]
    if section in SELECTORS and choice is not None:
        own = tuple(registry(section).get(choice).params)
        overridden = {p.name for p in own}
        params = tuple(p for p in params if p.name not in overridden) + own
    return params


@dataclass(frozen=True)
class TrialConfig:
    seed: int
    data: Section
    generator: Section
    augment: Section
    classifier: Section
    train: Section

    def flat(self, applicable_only: bool = False) -> dict[str, Any]:
        """The flat dotted-key dict: what is stored with every checkpoint. APPLICABLE_ONLY (a result row, TensorBoard's
        HParams): the keys that do not apply to this trial (`inapplicable`) are there with None, so a table has their
        column but no value that was never used."""
        out: dict[str, Any] = {"seed": self.seed}
        for name in COMMON:
            section: Section = getattr(self, name)
            out.update({f"{name}.{k}": v for k, v in section.values.items()})
        if applicable_only:
            out.update(dict.fromkeys(inapplicable(self), None))
        return out


def inapplicable(cfg: TrialConfig) -> list[str]:
    """The keys of CFG whose values take no part in its trial: every generator.* key when the policy uses no
    generator (none, oversample_*) or its values add no synthetic image (real_ratio 1.0, multiply_k 0), the
    filter's threshold and rounds without a filter, the plateau schedule's factor and patience under another
    schedule, SGD's momentum with another optimizer, and data.fold without data.folds. The values stay in the
    config (and in the generator's cache key, which only trials with a generator compute)."""
    keys = []
    if not uses_generator(cfg.augment.policy, dict(cfg.augment.values)):
        keys += [f"generator.{k}" for k in cfg.generator.values]
    if cfg.augment.filter == "none":
        keys += ["augment.filter_tau", "augment.filter_rounds"]
    if cfg.classifier.schedule != "plateau":
        keys += ["classifier.plateau_factor", "classifier.plateau_patience"]
    if cfg.classifier.optimizer != "sgd":
        keys.append("classifier.momentum")
    if not cfg.data.folds:
        keys.append("data.fold")
    return keys


def all_keys() -> dict[str, list[str]]:
    """Every key any registered entry declares, mapped to the entries it applies to ('*' for common keys)."""
    keys: dict[str, list[str]] = {"seed": ["*"]}
    for section, params in COMMON.items():
        for p in params:
            keys.setdefault(f"{section}.{p.name}", []).append("*")
        if section in SELECTORS:
            sel = SELECTORS[section].param
            keys.setdefault(f"{section}.{sel}", []).append("*")
            for name, entry in registry(section).items():
                for p in entry.params:
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
            sel, _, default = SELECTORS[section]
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
            sel = SELECTORS[section].param
            for key in flat:
                head, _, name = key.partition(".")
                if head == section and name != sel and name not in names and key in known and not drop_inapplicable:
                    owners = ", ".join(known[key])
                    errors.append(f"{key}: does not apply to {section}.{sel}={choice} (it applies to: {owners})")
    errors.extend(_fold_problems(values.get("data", {})))
    try:
        seed = SEED.coerce("seed", flat["seed"]) if "seed" in flat else SEED.default
    except ConfigError as e:
        errors.append(str(e))
        seed = SEED.default
    if errors:
        raise ConfigError("invalid config:\n  " + "\n  ".join(errors) if len(errors) > 1 else errors[0])
    return TrialConfig(seed=seed, **{name: Section(name, vals) for name, vals in values.items()})


def _fold_problems(data: Mapping[str, Any]) -> list[str]:
    """data.fold must name one of data.folds' folds; data.folds is 0 (none) or at least 2."""
    folds, fold = data.get("folds", 0), data.get("fold", 0)
    if not isinstance(folds, int) or not isinstance(fold, int):
        return []  # already reported by the key's own check
    if folds == 1:
        return ["data.folds: 1 fold cannot be tested on; expected 0 (no k-fold) or K >= 2"]
    if fold and not folds:
        return [f"data.fold: {fold} is set but data.folds is 0 (no k-fold); set data.folds: K (K > {fold}) as well"]
    if folds and fold >= folds:
        return [f"data.fold: {fold} is out of range for data.folds {folds}; expected 0..{folds - 1}"]
    return []


def parse_assignments(items: Iterable[str]) -> dict[str, str]:
    """KEY=VALUE strings from the command line -> a flat dict of strings (resolve() converts the types)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"{item!r}: expected KEY=VALUE, e.g. classifier.backbone=cnn3")
        out[key.strip()] = value.strip()
    return out
