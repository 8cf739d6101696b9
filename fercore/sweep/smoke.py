"""`fersweep run --smoke`: any sweep shrunk to a few tiny trials that check it end to end, keeping its design (its
backbones, policies, optimizer, space) and shrinking only sizes. No Ray here.

Sized so that any sweep's two smoke trials take about a minute on 2 CPU cores (tests/test_paper_sweeps.py and
tests/test_sweep_smoke.py run each).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

from fercore.config import DATA
from fercore.sweep.spec import SweepSpec

# Config keys, set in `fixed`: one epoch of each (a smoke run checks that the sweep runs, not what it learns; the
# confirmation phase's trial made a smoke run cost a third more, and every report sweep's smoke runs in CI).
SMOKE_SET = {"classifier.epochs": 1, "generator.epochs": 1}
# These sizes at most wherever they apply (a key a trial's generator or backbone does not have is dropped when its
# config is resolved). A smoke run's generators train one epoch and make noise that a quality filter rightly rejects
# whole (the trial then fails with FilterShortfall): its filters keep every image (tau 0), so the scoring runs while
# the threshold does not bite.
SMOKE_AT_MOST = {"generator.width": 8, "classifier.width": 8, "generator.sampling_steps": 2,
                 "generator.noise_steps": 100, "data.scale": 0.01, "generator.resolution": 32,
                 "augment.filter_tau": 0.0, "augment.multiply_k": 1.0}
SMOKE_TRIALS = 2
SMOKE_CONFIRM = {"top": 1, "seeds": 1}  # a sweep that confirms confirms its best smoke trial once more
# Targets counted in images per class scale with a procedural set's size, so a smoke run of a top-up to 1,500 per
# class trains on as many images relative to its data as the full sweep would.
SMOKE_COUNT_KEYS = ("augment.per_class_target", "augment.minority_target")
# Such a target when a space draws it (its range is for full-size data): fixed at this, above the largest class of
# the procedural set at smoke scale (happy: 72 at 0.01), so a top-up adds to every class without training the smoke
# trial and its oversampling control on several times the real images (300 made optuna_full's smoke ~20 s slower).
SMOKE_COUNT_DRAWN = 100


def smoke_spec(spec: SweepSpec, trials: int | None = None) -> SweepSpec:
    """SPEC shrunk for `--smoke`: TRIALS (default SMOKE_TRIALS) trials of SMOKE_SET epochs, sizes capped by
    SMOKE_AT_MOST (in `fixed`, or for a key the grid varies, the grid's values within the cap), one seed (a sweep that
    confirms confirms SMOKE_CONFIRM), on the
    procedural set the per-class count targets scaled with its size, and a grid cut to its first points in the
    file's order (_first_points)."""
    fixed, data, grid = _capped(spec)
    procedural = data.get("source", "procedural") == "procedural"
    shrink = data["scale"] / float(spec.data.get("scale", _data_default("scale"))) if procedural else 1.0
    for key in SMOKE_COUNT_KEYS:
        if key in grid:
            grid[key] = list(dict.fromkeys(max(1, round(v * shrink)) if v else v for v in grid[key]))
        elif key in fixed:
            fixed[key] = max(1, round(fixed[key] * shrink)) if fixed[key] else fixed[key]
        elif spec.space:
            fixed[key] = SMOKE_COUNT_DRAWN
    fixed.update(SMOKE_SET)
    n = trials or min(spec.num_samples, SMOKE_TRIALS)
    confirm = dict(SMOKE_CONFIRM) if spec.confirm_trials else {}
    return dataclasses.replace(spec, fixed=fixed, data=data, grid=_first_points(grid, n), num_samples=n, seeds=1,
                               confirm=confirm)


def _capped(spec: SweepSpec) -> tuple[dict[str, Any], dict[str, Any], dict[str, list]]:
    """Copies of SPEC's fixed values, data section and grid with every SMOKE_AT_MOST size capped."""
    fixed = dict(spec.fixed)
    data = dict(spec.data)
    grid = {k: list(v) for k, v in spec.grid.items()}
    for key, cap in SMOKE_AT_MOST.items():
        if key.startswith("data."):
            name = key.removeprefix("data.")
            if data.get("source", "procedural") == "procedural":
                data[name] = min(float(data.get(name, _data_default(name))), cap)
        elif key in grid:  # the grid keeps the key (and its design) with the values within the cap
            grid[key] = [v for v in grid[key] if v <= cap] or [cap]
        else:
            fixed[key] = min(fixed.get(key, cap), cap)
    return fixed, data, grid


def _first_points(grid: dict[str, list], n: int) -> dict[str, list]:
    """The smallest grid holding GRID's first N points in the file's order (the last key varying fastest): every
    key keeps its first values only. Optuna visits a grid's points in a random order, so a smoke run of the whole
    grid could draw its costliest point (real_ratio_grid's smoke test: 111 s on convnext_tiny, 39 s on its first
    backbone, shufflenet_v2); sweep files list their cheapest values first."""
    kept, need = {}, n
    for key in reversed(list(grid)):
        take = max(1, min(len(grid[key]), need))
        kept[key] = grid[key][:take]
        need = math.ceil(need / take)
    return {key: kept[key] for key in grid}


def _data_default(name: str) -> Any:
    return next(p.default for p in DATA if p.name == name)
