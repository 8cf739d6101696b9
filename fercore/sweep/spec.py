"""Sweep files (sweeps/*.yaml) read safely and validated whole before anything starts, into a SweepSpec.

A sweep file is declarative: the data source, a search space (a define-by-run function in search_spaces/), fixed
values that override it, the sampler, the objectives, the scheduler, the trial budget and resources. Every key, its
valid values and default are declared in fercore.sweep.keys (`fersweep list` prints them); this module checks each
value against that table, then the rules that tie keys together, then the configs the sweep will run
(fercore.sweep.checks), and reports every problem at once, each with its key. No Ray here: fercore.sweep.run turns
a SweepSpec into a Ray Tune run.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fercore import config
from fercore.errors import UserError
from fercore.metrics.reported import epoch_metrics, is_epoch_metric, is_objective, objectives, objectives_text
from fercore.sweep import keys
from fercore.sweep.checks import check_draws, check_grid, config_lines
from fercore.sweep.keys import SweepError, gpu_problem
from fercore.sweep.spaces import list_sweeps, load_space, sweep_dirs

JOURNAL = "journal:"  # optuna_storage's prefix for Optuna's journal file (a shared file system, no database server)
EPOCH_METRICS = epoch_metrics()  # reported every epoch: what ASHA can judge trials on
OBJECTIVES = objectives()  # reported before the test split is read: what a sweep may optimise


def _default(name: str):
    return field(default_factory=lambda: keys.default(name))


@dataclass
class SweepSpec:
    """A validated sweep file; the defaults are fercore.sweep.keys's."""

    name: str
    path: Path
    space: str = ""  # empty for a grid sweep
    space_file: Path | None = None  # `fersweep run --space-file PATH`: the space's file, given on the command line
    data: dict[str, Any] = _default("data")
    fixed: dict[str, Any] = _default("fixed")
    sampler: str = keys.default("sampler")
    grid: dict[str, list] = _default("grid")  # config key -> values, each coerced to the key's type
    metrics: list[str] = field(default_factory=lambda: [keys.default("metric")])
    modes: list[str] = field(default_factory=lambda: [keys.default("mode")])
    scheduler: dict[str, Any] = _default("scheduler")  # none by default with several metrics
    confirm: dict[str, int] = _default("confirm")  # confirm.top configs again on confirm.seeds fresh seeds
    num_samples: int = keys.default("num_samples")
    max_concurrent: int = keys.default("max_concurrent")
    resources: dict[str, float] = _default("resources")
    seed: int = keys.default("seed")
    seeds: int = keys.default("seeds")  # each sampled config runs this many times; the searcher sees the mean
    cache: bool = keys.default("cache")
    time_budget_s: float | None = keys.default("time_budget_s")
    max_failures: int = keys.default("max_failures")
    max_consecutive_errors: int = keys.default("max_consecutive_errors")
    min_free_gb: float = keys.default("min_free_gb")
    cache_max_gb: float | None = keys.default("cache_max_gb")
    optuna_storage: bool | str = keys.default("optuna_storage")
    description: str = keys.default("description")

    @property
    def metric(self) -> str:
        """The first objective: the one ASHA and the 'best trial' line use."""
        return self.metrics[0]

    @property
    def mode(self) -> str:
        return self.modes[0]

    @property
    def multi_objective(self) -> bool:
        return len(self.metrics) > 1

    @property
    def confirm_trials(self) -> int:
        """Trials of the confirmation phase: confirm.top configs times confirm.seeds (0: no such phase)."""
        return self.setting("confirm.top") * self.setting("confirm.seeds")

    @property
    def grid_size(self) -> int:
        return math.prod(len(v) for v in self.grid.values()) if self.grid else 0

    def setting(self, name: str) -> Any:
        """A mapping key's value (`scheduler.grace_period`, `resources.gpu`), its default where the file has none."""
        mapping, _, key = name.partition(".")
        return getattr(self, mapping).get(key, keys.default(name))

    def base_config(self) -> dict[str, Any]:
        """The fixed part of every trial's config: the data section and the sweep's fixed values."""
        return {**{f"data.{k}": v for k, v in self.data.items()}, **self.fixed}

    def storage_url(self, out: Path) -> str | None:
        """Where Optuna keeps the study, or None for in memory: an SQLAlchemy URL (sqlite:///..., postgresql://...),
        or journal:///abs/path for Optuna's journal file (`journal:PATH`, or a path ending in .log or .journal;
        relative paths are in the results folder)."""
        if self.optuna_storage is False:
            return None
        if self.optuna_storage is True:
            return f"sqlite:///{Path(out).resolve() / 'optuna.db'}"
        value = self.optuna_storage
        journal = value.startswith(JOURNAL) or value.endswith((".log", ".journal"))
        if "://" in value and not value.startswith(JOURNAL):
            return value
        raw = value.removeprefix(JOURNAL)
        raw = raw[2:] if raw.startswith("//") else raw  # journal:///abs/path, as a URL writes it
        path = (Path(out) / Path(raw).expanduser()).resolve()
        return f"{JOURNAL}//{path}" if journal else f"sqlite:///{path}"


def set_gpus_per_trial(spec: SweepSpec, value: float) -> None:
    """`fersweep run --gpus-per-trial F`: override the sweep file's resources.gpu."""
    problem = gpu_problem(value, zero_ok=False)
    if problem:
        raise SweepError(f"--gpus-per-trial: {problem}")
    spec.resources["gpu"] = int(value) if float(value).is_integer() else float(value)


def set_data_source(spec: SweepSpec, source: str) -> None:
    """`fersweep run --data SOURCE`: override the sweep file's data.source (its other data keys stay). The procedural
    set's own key (data.scale) is left out for a file source, where it does not apply."""
    if source != "procedural" and not Path(source).exists():
        raise SweepError(f"--data: {source}: no such file or folder (expected 'procedural', a FER2013 .csv file, an "
                         "image folder or a RAF-DB folder)")
    spec.data["source"] = source
    if source != "procedural":
        spec.data.pop("scale", None)


def load_sweep(path: str | Path, space_file: str | Path | None = None) -> SweepSpec:
    """Read and validate a sweep file; every problem is reported at once, each with its key. SPACE_FILE (`--space-file`)
    is a search space's file given on the command line: it replaces the file's `space`, which can only name a module
    of search_spaces/ (a sweep file that could name any path would run any Python file on the driver)."""
    path = _find(Path(path))
    raw = _read_yaml(path)
    errors = [f"{key}: unknown sweep key; valid: {', '.join(sorted(keys.TOP_LEVEL))}"
              for key in raw if key not in keys.TOP_LEVEL]
    spec = SweepSpec(name=str(raw.get("name", path.stem)), path=path.resolve(), space=str(raw.get("space") or ""),
                     description=str(raw.get("description", "")))
    errors += [p for p in (keys.name_problem(spec.name), keys.space_problem(spec.space)) if p]
    if space_file is not None:
        spec.space_file = _space_file(Path(space_file))
        spec.space = spec.space_file.stem
    _read_values(raw, spec, errors)
    _read_objectives(raw, spec, errors)
    _read_scheduler(raw, spec, errors)
    _read_mapping("resources", spec.resources, errors)
    _read_mapping("confirm", spec.confirm, errors)
    base_ok = _check_base(spec, errors)
    if spec.sampler == "grid":
        _read_grid(raw, spec, errors, check_grid if base_ok else None)
    else:
        if "grid" in raw:
            errors.append(f"grid: only for sampler: grid (this sweep's sampler is {spec.sampler})")
        if not spec.space:
            errors.append("space: missing; name a search space in search_spaces/")
        elif _space_loads(spec, errors) and base_ok:
            check_draws(spec, errors)
    if errors:
        raise SweepError(f"{path}: " + (errors[0] if len(errors) == 1 else
                                        f"{len(errors)} problems:\n  " + "\n  ".join(errors)))
    return spec


def _space_file(path: Path) -> Path:
    if path.suffix != ".py" or not path.is_file():
        raise SweepError(f"--space-file: {path}: expected a Python file that defines space(trial)")
    return path.resolve()


def _find(path: Path) -> Path:
    if not path.exists() and not path.suffix:
        for d in sweep_dirs():  # `fersweep run quickstart` finds sweeps/quickstart.yaml
            if (d / f"{path}.yaml").exists():
                return d / f"{path}.yaml"
    if not path.exists():
        raise SweepError(f"{path}: no such sweep file; known sweeps: {', '.join(list_sweeps())}")
    return path


def _read_yaml(path: Path) -> dict:
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise SweepError(f"{path}:{where} not valid YAML: {getattr(e, 'problem', e)}") from None
    if not isinstance(raw, dict):
        raise SweepError(f"{path}: expected a mapping of sweep keys ({', '.join(sorted(keys.TOP_LEVEL))})")
    return raw


# Keys read with their own rules below: name, description and space as text, the objectives as lists, the grid by
# resolving its points.
_OWN_RULES = {"name", "description", "space", "metric", "mode", "grid"}


def _read_values(raw: dict, spec: SweepSpec, errors: list[str]) -> None:
    """Check each top-level value against its key and keep the valid ones in SPEC (a mapping as a copy)."""
    for key in keys.KEYS:
        if key.name not in raw or "." in key.name:
            continue
        problem = key.problem(raw[key.name])
        if problem:
            errors.append(problem)
        elif key.name not in _OWN_RULES:
            value = raw[key.name]
            setattr(spec, key.name, dict(value) if isinstance(value, dict) else value)


def _read_mapping(name: str, values: dict[str, Any], errors: list[str]) -> None:
    """Check a mapping's keys (scheduler, resources) against its declared sub-keys."""
    declared = {key.name.partition(".")[2]: key for key in keys.sub_keys(name)}
    for sub, value in values.items():
        if sub not in declared:
            errors.append(f"{name}.{sub}: unknown; valid: {', '.join(declared)}")
        elif problem := declared[sub].problem(value):
            errors.append(problem)


def _read_objectives(raw: dict, spec: SweepSpec, errors: list[str]) -> None:
    """metric and mode: one mode per metric, no metric twice, none of the test split."""
    metric, mode = raw.get("metric", keys.default("metric")), raw.get("mode")
    if keys.BY_NAME["metric"].problem(metric) or ("mode" in raw and keys.BY_NAME["mode"].problem(mode)):
        return  # _read_values reported it
    metrics = metric if isinstance(metric, list) else [metric]
    for m in sorted({m for m in metrics if metrics.count(m) > 1}):
        errors.append(f"metric: {m} is listed twice")
    for m in metrics:
        if "test" in m:
            instead = f"val_{m.removeprefix('test_')}"
            errors.append(f"metric: {m}: the test split is read once, at the end, and must not steer the search; "
                          + (f"use {instead}; " if m.startswith("test_") and is_objective(instead) else "")
                          + f"valid: {objectives_text()}")
        elif not is_objective(m):  # a per-class name is checked against the data set once it is loaded
            errors.append(f"metric: {m}: no trial reports it before its test split is read; valid: "
                          f"{objectives_text()}")
    if "mode" not in raw:
        if len(metrics) > 1:
            errors.append(f"mode: missing; give one mode (max or min) per metric, e.g. mode: "
                          f"[{', '.join('max' for _ in metrics)}]")
            return
        modes = [keys.default("mode")]
    else:
        modes = mode if isinstance(mode, list) else [mode]
        if len(modes) != len(metrics):
            errors.append(f"mode: {len(modes)} mode(s) for {len(metrics)} metric(s) ({', '.join(metrics)}); "
                          f"give one per metric")
            return
    spec.metrics, spec.modes = list(metrics), list(modes)


def _read_scheduler(raw: dict, spec: SweepSpec, errors: list[str]) -> None:
    """The scheduler's keys, and asha only where it can judge: one objective, reported every epoch."""
    if "scheduler" in raw and not isinstance(raw["scheduler"], dict):
        return  # _read_values reported it
    if "scheduler" not in raw and spec.multi_objective:
        spec.scheduler = {}
    kind = spec.scheduler.setdefault("type", "none" if spec.multi_objective else keys.default("scheduler.type"))
    _read_mapping("scheduler", spec.scheduler, errors)
    if kind != "asha":
        return
    if spec.multi_objective:
        errors.append(f"scheduler.type: asha stops trials on one metric, which would cut the Pareto front of "
                      f"{', '.join(spec.metrics)} short; use scheduler: {{type: none}} (the default with several "
                      f"metrics)")
    elif is_objective(spec.metric) and not is_epoch_metric(spec.metric):
        errors.append(f"scheduler.type: asha compares trials on {spec.metric} every epoch, but it is measured only "
                      f"at the end; use a val_ metric (e.g. val_macro_f1) or scheduler: {{type: none}}")


def _check_base(spec: SweepSpec, errors: list[str]) -> bool:
    """The data section and the fixed values must form a valid config on their own (defaults fill the rest);
    False when they do not (the grid and the space are then not resolved with them)."""
    known = config.all_keys()
    for key in spec.data:
        if f"data.{key}" not in known:
            errors.append(f"data.{key}: unknown; valid: {', '.join(p.name for p in config.DATA)}")
    base_ok = True
    try:
        config.resolve(spec.base_config(), drop_inapplicable=True)
    except UserError as e:
        errors.extend(config_lines(e))
        base_ok = False
    source = spec.data.get("source", "procedural")
    if source != "procedural" and not Path(source).exists():
        errors.append(f"data.source: {source}: no such file or folder")
    return base_ok


def _read_grid(raw: dict, spec: SweepSpec, errors: list[str], check_grid) -> None:
    """A grid sweep: a grid and no space; num_samples defaults to the grid's size and may not exceed it.
    CHECK_GRID resolves the grid's points (None when the fixed values do not resolve on their own)."""
    if spec.space:
        errors.append("space: a grid sweep enumerates its grid and names no space; put constants in fixed")
    if "grid" not in raw:
        errors.append("grid: missing; sampler: grid needs grid: {config key: [values]}")
    elif check_grid is not None and not keys.BY_NAME["grid"].problem(raw["grid"]):
        check_grid(raw["grid"], spec, errors)
    if "num_samples" not in raw and spec.grid:
        spec.num_samples = spec.grid_size
    elif spec.grid and spec.num_samples > spec.grid_size:
        errors.append(f"num_samples: {spec.num_samples} is more than the grid's {spec.grid_size} points; each "
                      f"point runs once (seeds: K repeats each)")


def _space_loads(spec: SweepSpec, errors: list[str]) -> bool:
    try:
        load_space(spec.space, spec.path, spec.space_file)
    except SweepError as e:
        errors.append(str(e))
        return False
    return True
