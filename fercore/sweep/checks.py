"""What load_sweep checks by resolving the configs a sweep will run, before it starts: every point of a grid, and
SPACE_DRAWS random draws from a search space. No Ray here (Optuna draws from the space).
"""
from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

from fercore import config
from fercore.errors import ConfigError, UserError
from fercore.sweep.spaces import FixedSpace, flat_config

if TYPE_CHECKING:
    from fercore.sweep.spec import SweepSpec

SPACE_DRAWS = 20  # configs drawn from a space at random to validate it before the sweep starts


def config_lines(e: UserError) -> list[str]:
    """The problems of a ConfigError, one per line."""
    return str(e).removeprefix("invalid config:\n  ").split("\n  ")


def check_grid(grid: dict[str, Any], spec: SweepSpec, errors: list[str]) -> None:
    """Check the grid's keys and resolve every point with the fixed values; keep the grid in SPEC with each value
    as its key's type (`0` for a float key becomes 0.0)."""
    known = config.all_keys()
    keys = _grid_keys(grid, spec, known, errors)
    canonical = {k: list(grid[k]) for k in keys}
    applies = dict.fromkeys(keys, False)
    found: dict[str, None] = {}  # ordered set: one line per distinct problem, however many points share it
    base = spec.base_config()
    for point in itertools.product(*(list(enumerate(grid[k])) for k in keys)):
        try:
            resolved = config.resolve({**base, **{k: v for k, (_, v) in zip(keys, point)}},
                                      drop_inapplicable=True).flat()
        except ConfigError as e:
            for line in config_lines(e):  # A fixed value may be invalid only for an entry the grid selects.
                found[f"grid.{line}" if line.split(":")[0] in grid else f"grid: with the grid's values, {line}"] = None
            continue
        for k, (i, _) in zip(keys, point):
            if k in resolved:
                applies[k] = True
                canonical[k][i] = resolved[k]
    errors.extend(found)
    for k in keys:
        if not applies[k] and not any(line.startswith(f"grid.{k}:") for line in found):
            section = k.split(".")[0]
            owners = ", ".join(f"{section}.{config.SELECTORS[section][0]}={o}" for o in known[k] if o != "*")
            errors.append(f"grid.{k}: applies to no grid point with these fixed values (it belongs to {owners})")
        values = canonical[k]
        if any(v in values[:i] for i, v in enumerate(values)):
            errors.append(f"grid.{k}: two values are the same {k} ({values!r})")
    spec.grid = {k: canonical[k] for k in grid if k in canonical}


def _grid_keys(grid: dict[str, Any], spec: SweepSpec, known: dict[str, list[str]], errors: list[str]) -> list[str]:
    """The grid's keys fit to resolve: known config keys, not data keys, not fixed, with a list of distinct values."""
    keys = []
    for key, values in grid.items():
        if key not in known:
            errors.append(f"grid.{key}: unknown key; valid keys: {', '.join(sorted(known))}")
        elif key.startswith("data.") and key != "data.fold":  # a trial picks its fold of the one data set
            errors.append(f"grid.{key}: the data set is loaded once per sweep; set data keys under data: (data.fold "
                          "is the one a grid may vary)")
        elif key in spec.fixed:
            errors.append(f"grid.{key}: also in fixed; a key is either fixed or on the grid")
        elif (not isinstance(values, list) or not values
              or not all(isinstance(v, (str, int, float, bool)) for v in values)):
            errors.append(f"grid.{key}: expected a non-empty list of values, got {values!r}")
        elif any(v in values[:i] for i, v in enumerate(values)):
            errors.append(f"grid.{key}: a value is listed twice in {values!r}")
        else:
            keys.append(key)
    return keys


def check_draws(spec: SweepSpec, errors: list[str]) -> None:
    """Draw a few configs from the space at random: each must resolve, and the space must not raise or vary a
    categorical's choices (Optuna refuses that mid-sweep), so such problems show before the sweep starts."""
    import optuna

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=spec.seed))
        space = FixedSpace(spec.space, spec.path, spec.base_config(), space_file=spec.space_file)
        found: dict[str, None] = {}
        for draw in range(1, SPACE_DRAWS + 1):
            trial = study.ask()
            try:
                returned = space(trial)
            except Exception as e:  # noqa: BLE001 - the space is the user's code; report what it raised
                errors.append(f"space: {spec.space} raised {type(e).__name__} on draw {draw}: {e}")
                return
            found.update(_draw_problems(spec.space, trial.params, returned))
        errors.extend(found)
    finally:
        optuna.logging.set_verbosity(verbosity)


def _draw_problems(space: str, params: dict[str, Any], returned: dict[str, Any]) -> dict[str, None]:
    """What is wrong with one draw (an ordered set of lines): a data key suggested, or a config that does not
    resolve."""
    found: dict[str, None] = {}
    for key in flat_config(params):
        if key.startswith("data."):
            found[f"space: {space} suggests {key}; the data set is loaded once per sweep, set it under data:"] = None
    try:
        config.resolve(flat_config({**params, **returned}), drop_inapplicable=True)
    except ConfigError as e:
        found.update((f"space: {space} drew an invalid config: {line}", None) for line in config_lines(e))
    return found
