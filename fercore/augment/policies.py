"""Mixing policies, registered by name: given the real training counts per class, how many real images to keep
and how many synthetic ones to add, per class. Which images are drawn is decided by `mix()`, seeded."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from fercore.config import Param
from fercore.registry import Registry


@dataclass(frozen=True)
class MixPlan:
    real: np.ndarray  # real images to keep, per class
    synthetic: np.ndarray  # synthetic images to add, per class


@dataclass(frozen=True)
class PolicyEntry:
    plan: Callable[[np.ndarray, dict[str, Any]], MixPlan]
    params: tuple[Param, ...] = ()
    help: str = ""


POLICIES: Registry[PolicyEntry] = Registry("mixing policy", "augment.policy")


def register(name: str, params: tuple[Param, ...] = (), help: str = ""):
    def add(plan):
        POLICIES.register(name)(PolicyEntry(plan, params, help))
        return plan

    return add


@register("none", help="real images only")
def _none(counts, values):
    return MixPlan(counts.copy(), np.zeros_like(counts))


@register("balance", help="top every class up to the largest class with synthetic images (002, Aug. 1)")
def _balance(counts, values):
    return MixPlan(counts.copy(), counts.max() - counts)


@register("real_ratio", params=(Param("real_ratio", 0.5, 0.0, 1.0, help="share of real images in the training set"),),
          help="training set of the real set's size, a share r real and 1-r synthetic, class proportions kept (004)")
def _real_ratio(counts, values):
    real = np.round(counts * values["real_ratio"]).astype(np.int64)
    return MixPlan(real, counts - real)


def plan_mix(policy: str, counts: np.ndarray, values: dict[str, Any]) -> MixPlan:
    plan = POLICIES.get(policy).plan(np.asarray(counts, dtype=np.int64), values)
    assert (plan.real <= counts).all() and (plan.real >= 0).all() and (plan.synthetic >= 0).all(), plan
    return plan


def mix(images: np.ndarray, labels: np.ndarray, plan: MixPlan, synthetic: dict[int, np.ndarray],
        seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Real images kept by the plan (a seeded subset per class) plus the synthetic ones.

    Returns images, labels and an is_synthetic flag per image.
    """
    rng = np.random.default_rng(seed)
    keep = []
    for c, n in enumerate(plan.real):
        idx = np.flatnonzero(labels == c)
        keep.append(idx if n == len(idx) else rng.choice(idx, size=int(n), replace=False))
    keep_idx = np.sort(np.concatenate(keep)) if keep else np.zeros(0, np.int64)
    parts_x, parts_y, parts_s = [images[keep_idx]], [labels[keep_idx]], [np.zeros(len(keep_idx), bool)]
    for c, n in enumerate(plan.synthetic):
        if n:
            pool = synthetic[c]
            assert len(pool) >= n, f"class {c}: {len(pool)} synthetic images for {n} needed"
            parts_x.append(pool[:n])
            parts_y.append(np.full(n, c, dtype=labels.dtype))
            parts_s.append(np.ones(n, bool))
    return np.concatenate(parts_x), np.concatenate(parts_y), np.concatenate(parts_s)
