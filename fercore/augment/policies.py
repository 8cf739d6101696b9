"""Mixing policies, registered by name: given the real training counts per class, how many real images to keep,
how many synthetic ones to add and how many of the kept real ones to draw again (duplicate), per class. Which images
are drawn is decided by `mix()`, seeded.

The oversample_* policies add no synthetic image: they reach the counts of balance, per_class and minority by drawing
the class's real training images again, so `augment.policy: [balance, oversample_balance]` is one sweep asking
whether a generator beats duplicating real faces. The same draw is every augmented trial's oversampling control
(fercore.trial): the trial's synthetic images replaced by real images of their class drawn again.

What a generator saw: every real training image (fercore.synthetic fits it on the whole training split), whatever
share of them the policy keeps. With real_ratio r the trial drops 1 - r of the real images, but its synthetic images
still carry what the generator learnt from them; the trial's real-subset control (the kept share alone) tells them
apart.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from fercore.errors import ConfigError
from fercore.labels import CLASSES, canonical_class
from fercore.params import Param
from fercore.registry import Entry, Registry


@dataclass(frozen=True)
class MixPlan:
    real: np.ndarray  # real images to keep, per class
    synthetic: np.ndarray  # synthetic images to add, per class
    duplicate: np.ndarray | None = None  # kept real images drawn again, per class (None: none)

    def __post_init__(self):
        if self.duplicate is None:
            object.__setattr__(self, "duplicate", np.zeros_like(self.synthetic))

    @property
    def total(self) -> np.ndarray:
        """Training images per class."""
        return self.real + self.synthetic + self.duplicate


@dataclass(frozen=True)
class PolicyEntry(Entry):
    synthetic: bool = True  # the policy can add synthetic images, so a trial of it uses a generator
    # Whether the policy's values add no synthetic image on any data set (real_ratio 1.0): its generator keys then
    # take no part, and such trials are one real-only config whatever they say (fercore.config.inapplicable).
    adds_none: Callable[[dict[str, Any]], bool] | None = None


# Each entry's target: (real training counts per class, the augment section's values) -> MixPlan. plan_mix adds
# CLASS_NAMES to the values: the data set's classes in label order, for a policy that names classes.
CLASS_NAMES = "class_names"
POLICIES: Registry[PolicyEntry] = Registry("mixing policy", "augment.policy", PolicyEntry)


def uses_generator(policy: str, values: dict[str, Any] | None = None) -> bool:
    """Whether a trial of POLICY (with the augment section's VALUES, when known) uses a generator, and so has
    generator.* keys and a synthetic pool."""
    entry = POLICIES.get(policy)
    if values is not None and entry.adds_none is not None and entry.adds_none(values):
        return False
    return entry.synthetic


@POLICIES.register("none", synthetic=False, help="real images only")
def _none(counts, values):
    return MixPlan(counts.copy(), np.zeros_like(counts))


@POLICIES.register("balance", help="top every class up to the largest class with synthetic images (002, Aug. 1)")
def _balance(counts, values):
    return MixPlan(counts.copy(), counts.max() - counts)


@POLICIES.register(
    "real_ratio", params=(Param("real_ratio", 0.5, 0.0, 1.0, help="share of real images in the training set"),),
    adds_none=lambda values: values["real_ratio"] >= 1.0,
    help="training set of the real set's size, a share r real and 1-r synthetic, class proportions kept (004)")
def _real_ratio(counts, values):
    real = np.round(counts * values["real_ratio"]).astype(np.int64)
    return MixPlan(real, counts - real)


PER_CLASS_TARGET = Param("per_class_target", 1000, 1, 1_000_000,
                         help="images per class after topping up (002: 10,000-15,000 on FER2013)")


@POLICIES.register(
    "per_class", params=(PER_CLASS_TARGET,),
    help="top every class up to N images; a class already above N keeps its real images and gets none (002)")
def _per_class(counts, values):
    return MixPlan(counts.copy(), np.maximum(values["per_class_target"] - counts, 0))


@dataclass(frozen=True)
class ClassListParam(Param):
    """A comma-separated list of class names. When the config is resolved the data set is not known yet, so only
    the names' form is checked (FER2013's aliases become their class: anger -> angry); plan_mix checks them against
    the data set's classes."""

    def valid_text(self) -> str:
        return "comma-separated class names (lowercase letters, digits, _), e.g. " + ", ".join(CLASSES)

    def coerce(self, key: str, value: Any) -> str:
        return ",".join(class_names(key, value))


def class_names(key: str, text: Any) -> tuple[str, ...]:
    """The class names of a comma-separated list (any case, spaces allowed; aliases of FER2013's classes mapped to
    them), FER2013's first in their order, then the others sorted, without repeats."""
    names = {canonical_class(n) or n for n in (n.strip().lower() for n in str(text).split(",")) if n}
    bad = sorted(n for n in names if not _SAFE.fullmatch(n))
    if bad or not names:
        got = f"bad class name {', '.join(map(repr, bad))}" if bad else "no class names"
        raise ConfigError(f"{key}: {got}; expected comma-separated class names of the data set, such as "
                          f"{', '.join(CLASSES)}")
    return tuple(c for c in CLASSES if c in names) + tuple(sorted(names - set(CLASSES)))


def class_ids(key: str, text: Any, data_classes: tuple[str, ...] = CLASSES) -> tuple[int, ...]:
    """Class ids, in label order, of a comma-separated list of names, each of which must be one of DATA_CLASSES
    (the data set's classes): a ConfigError naming KEY and the data set's classes otherwise."""
    names = class_names(key, text)
    index = {c: i for i, c in enumerate(data_classes)}
    unknown = [n for n in names if n not in index]
    if unknown:
        raise ConfigError(f"{key}: unknown class {', '.join(map(repr, unknown))}: the data set's classes are "
                          f"{', '.join(data_classes)}")
    return tuple(sorted(index[n] for n in names))


_SAFE = re.compile(r"[a-z0-9_]+")
MINORITY_DEFAULT = "disgust,fear,surprise"  # FER2013's rarest or hardest; a data set without some uses the rest


MINORITY = (
    ClassListParam("minority_classes", MINORITY_DEFAULT, help="classes to top up, comma-separated (the default: "
                                                              "those of disgust, fear, surprise the data set has)"),
    Param("minority_target", 0, 0, 1_000_000, help="images per named class after topping up; 0: the largest class's"),
)


@POLICIES.register("minority", params=MINORITY, help="top up only the named classes (default disgust, fear, "
                                                     "surprise) to a target count; others stay real")
def _minority(counts, values):
    # Validated again here, against the data set's classes: resolve() does not know them.
    data_classes = tuple(values.get(CLASS_NAMES) or CLASSES[:len(counts)])
    named = values["minority_classes"]
    if class_names("augment.minority_classes", named) == class_names("", MINORITY_DEFAULT):
        named = ",".join(c for c in class_names("", MINORITY_DEFAULT) if c in data_classes) or named
    chosen = list(class_ids("augment.minority_classes", named, data_classes))
    target = values["minority_target"] or int(counts.max(initial=0))
    synthetic = np.zeros_like(counts)
    synthetic[chosen] = np.maximum(target - counts[chosen], 0)
    return MixPlan(counts.copy(), synthetic)


@POLICIES.register(
    "multiply", params=(Param("multiply_k", 1.0, 0.0, 20.0, help="synthetic images per real image"),),
    adds_none=lambda values: values["multiply_k"] == 0,
    help="add k synthetic images per real image of every class (k * n_c, half rounded up), proportions kept")
def _multiply(counts, values):
    # floor(x + 0.5) rather than np.round: halves go up, not to the nearest even count.
    return MixPlan(counts.copy(), np.floor(counts * values["multiply_k"] + 0.5).astype(np.int64))


def _oversampling(target: str):
    """The oversample_TARGET policy: TARGET's counts, its synthetic images replaced by real ones drawn again (a class
    without real images cannot be drawn from and stays empty)."""
    def plan(counts, values):
        wanted = POLICIES.get(target).target(counts, values)
        return MixPlan(counts.copy(), np.zeros_like(counts), np.where(counts > 0, wanted.synthetic, 0))
    return plan


for _target, _params in (("balance", ()), ("per_class", (PER_CLASS_TARGET,)), ("minority", MINORITY)):
    POLICIES.register(f"oversample_{_target}", params=_params, synthetic=False,
                      help=f"{_target}'s counts reached by drawing the class's real training images again, no "
                           f"generator: the control for {_target} as a policy")(_oversampling(_target))


def plan_mix(policy: str, counts: np.ndarray, values: dict[str, Any],
             class_names: tuple[str, ...] | None = None) -> MixPlan:
    """POLICY's plan for real training COUNTS per class; CLASS_NAMES: the data set's classes in label order
    (default FER2013's), which any class a policy names must be one of."""
    counts = np.asarray(counts, dtype=np.int64)
    names = tuple(class_names) if class_names is not None else CLASSES[:len(counts)]
    plan = POLICIES.get(policy).target(counts, {**values, CLASS_NAMES: names})
    assert (plan.real <= counts).all() and (plan.real >= 0).all() and (plan.synthetic >= 0).all(), plan
    assert (plan.duplicate >= 0).all() and not ((plan.duplicate > 0) & (plan.real == 0)).any(), plan
    return plan


def kept_real(labels: np.ndarray, plan: MixPlan, seed: int) -> np.ndarray:
    """The indices, in order, of the real images (of LABELS) that PLAN keeps: per class all of them, or a seeded
    subset of plan.real[c]. mix() puts these first; a trial's audit counts their copies by index."""
    rng = np.random.default_rng(seed)
    keep = []
    for c, n in enumerate(plan.real):
        idx = np.flatnonzero(labels == c)
        keep.append(idx if n == len(idx) else rng.choice(idx, size=int(n), replace=False))
    return np.sort(np.concatenate(keep)) if keep else np.zeros(0, np.int64)


def mix(images: np.ndarray, labels: np.ndarray, plan: MixPlan, synthetic: dict[int, np.ndarray],
        seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Real images kept by the plan (a seeded subset per class), then per class the synthetic ones and the kept real
    ones drawn again. Returns images, labels and an is_synthetic flag per image; the kept real images come first
    (plan.real.sum() of them), in their order in IMAGES.

    Duplicates are drawn from the class's kept images as evenly as a count allows: every image floor(d / n) times,
    and d mod n of them (a seeded choice) once more. Their stream is apart from the keeping's, so a plan without
    duplicates draws what it drew before they existed, and two plans with the same real and duplicate counts (an
    oversample_* trial and the control of an augmented trial) draw the same training set.
    """
    keep_idx = kept_real(labels, plan, seed)
    parts_x, parts_y, parts_s = [images[keep_idx]], [labels[keep_idx]], [np.zeros(len(keep_idx), bool)]
    again = np.random.default_rng([seed, 1])
    for c, (n, d) in enumerate(zip(plan.synthetic, plan.duplicate)):
        if n:
            pool = synthetic[c]
            assert len(pool) >= n, f"class {c}: {len(pool)} synthetic images for {n} needed"
            parts_x.append(pool[:n])
            parts_y.append(np.full(n, c, dtype=labels.dtype))
            parts_s.append(np.ones(n, bool))
        if d:
            kept = keep_idx[labels[keep_idx] == c]
            assert len(kept), f"class {c}: {d} duplicates asked of a class with no real image kept"
            whole, rest = divmod(int(d), len(kept))
            drawn = np.concatenate([np.tile(kept, whole), np.sort(again.choice(kept, size=rest, replace=False))])
            parts_x.append(images[drawn])
            parts_y.append(labels[drawn])
            parts_s.append(np.zeros(len(drawn), bool))
    return np.concatenate(parts_x), np.concatenate(parts_y), np.concatenate(parts_s)
