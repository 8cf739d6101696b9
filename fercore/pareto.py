"""The Pareto front of a sweep with several objectives (`metric: [val_macro_f1, train_seconds]`): the completed trials
that no other completed trial beats on every objective at once. No Ray here; fercore.sweep marks the front in
trials.parquet (column `pareto`) and prints it."""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def non_dominated(points: Sequence[Sequence[float]], modes: Sequence[str]) -> list[bool]:
    """For each point, whether no other point is at least as good on every objective and better on one.
    MODES gives each objective's direction ("max" or "min"); equal points do not dominate each other."""
    signs = [1.0 if m == "max" else -1.0 for m in modes]
    scored = [[s * v for s, v in zip(signs, p)] for p in points]  # Every objective maximised.

    def dominates(a: list[float], b: list[float]) -> bool:
        return all(x >= y for x, y in zip(a, b)) and any(x > y for x, y in zip(a, b))

    return [not any(dominates(other, p) for other in scored) for p in scored]


def front(rows: Sequence[Mapping[str, Any]], metrics: Sequence[str], modes: Sequence[str]) -> list[bool]:
    """The `pareto` flag of each result row: True for a completed row with a finite value of every metric that no
    other such row dominates; False for every other row (stopped, failed, or missing a metric)."""
    eligible = [i for i, r in enumerate(rows) if r.get("status") == "completed"
                and all(_number(r.get(m)) is not None for m in metrics)]
    flags = non_dominated([[float(rows[i][m]) for m in metrics] for i in eligible], modes)
    marked = [False] * len(rows)
    for i, on in zip(eligible, flags):
        marked[i] = on
    return marked
