"""Sweep files (sweeps/*.yaml): read safely, validated whole before anything starts, and the search spaces they name.

A sweep file is declarative: the data source, a search space (a define-by-run function in search_spaces/), fixed
values that override it, the sampler, the objectives, the scheduler, the trial budget and resources.
No Ray here: the sweep layer (fercore.sweep) turns a SweepSpec into a Ray Tune run.

Keys (every one optional except `space`, which a grid sweep must not have):
  sampler         tpe (default), random, nsga2 (Optuna's NSGA-II, for several objectives), or grid: every point of
                  `grid` runs exactly once (times `seeds`), and `num_samples` defaults to the grid's size.
  grid            {config key: [values]}, only with sampler: grid; its keys are suggested as categoricals, so a grid
                  sweep names no `space` (its constants go in `fixed`). Each point is resolved before the sweep starts:
                  every value must be valid where its key applies, and every key must apply to some point.
  metric, mode    one metric (default val_macro_f1, max), or lists of the same length for several objectives, e.g.
                  [val_macro_f1, train_seconds] with [max, min]. A test_ metric is refused: the test split is read once,
                  at the end, and must not steer the search. With several metrics the scheduler defaults to none and
                  asha is refused (it stops trials on one metric, which would cut the Pareto front short); the front
                  is marked in trials.parquet (column `pareto`) and printed.
  scheduler       {type: asha | none, grace_period, reduction_factor, max_t}; asha needs a metric every epoch reports
                  (val_*, train_loss).
  num_samples, max_concurrent, seed, seeds (each sampled config runs with seeds seed, seed+1, ...; Optuna sees the
                  mean of each objective), cache
  time_budget_s   stop the sweep after this many seconds; trials running then are recorded as stopped.
  max_failures    retries of a trial that crashed (default 1: a lost node, an out-of-memory error). A trial that
                  diverged or whose config is invalid for it is recorded at once and never retried: it would again.
  optuna_storage  true keeps the Optuna study (named after the sweep) in <results>/<name>/optuna.db for
                  optuna-dashboard; or a file path (relative: inside the results folder) or an SQLAlchemy URL. A new run
                  with the same storage continues the study.
  resources       {cpu, gpu}; gpu is a fraction of one GPU in (0, 1] or a whole number (`fersweep run
                  --gpus-per-trial F` overrides it).

Before the sweep starts, a named space is drawn from SPACE_DRAWS times at random: every draw must resolve to a valid
config, set no data key, and keep each categorical's choices. Search spaces are loaded as modules of a package made for their folder, so a space can import its siblings
relatively (`from .parts import classifier`) whatever the working folder. A suggestion named `KEY@VARIANT` sets
config key KEY: Optuna fixes a categorical's choices per name, so a key whose choices depend on an earlier choice
(augment.filter without `discriminator` for a diffusion model) gets one name per variant.
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import itertools
import math
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from fercore import config as cfg
from fercore.errors import ConfigError, UserError

REPO_ROOT = Path(__file__).resolve().parent.parent
SAMPLERS = ("tpe", "random", "grid", "nsga2")
SCHEDULERS = ("asha", "none")
TOP_KEYS = {"name", "description", "data", "space", "fixed", "sampler", "grid", "metric", "mode", "scheduler",
            "num_samples", "max_concurrent", "resources", "seed", "seeds", "cache", "time_budget_s", "max_failures",
            "optuna_storage"}
EPOCH_METRICS = ("train_loss", "lr")  # reported every epoch, as every val_ metric is: what ASHA can judge trials on
SPACE_DRAWS = 20  # configs drawn from a space at random to validate it before the sweep starts
# `--smoke`: every trial this short, and these sizes at most wherever they apply (a key a trial's generator or
# backbone does not have is dropped when its config is resolved). Sized so that any sweep's two smoke trials take
# about a minute on 2 CPU cores (tests/test_paper_sweeps.py runs each).
SMOKE_SET = {"classifier.epochs": 2, "generator.epochs": 1}  # config keys, set in `fixed`
# A smoke run's generators train one epoch and make noise that a quality filter rightly rejects whole (the trial then
# fails with FilterShortfall): its filters keep every image (tau 0), so the scoring runs while the threshold does not
# bite.
SMOKE_AT_MOST = {"generator.width": 8, "classifier.width": 8, "generator.sampling_steps": 2,
                 "generator.noise_steps": 100, "data.scale": 0.015, "generator.resolution": 32,
                 "augment.filter_tau": 0.0, "augment.multiply_k": 1.0}
SMOKE_TRIALS = 2
# Targets counted in images per class scale with a procedural set's size, so a smoke run of a top-up to 1,500 per
# class trains on as many images relative to its data as the full sweep would.
SMOKE_COUNT_KEYS = ("augment.per_class_target", "augment.minority_target")
SMOKE_COUNT_DRAWN = 300  # such a target when a space draws it (its range is for full-size data): fixed at this
_PACKAGE = "fercore_search_spaces"


class SweepError(UserError):
    """A sweep file that cannot run as written; lists every problem with its key."""


@dataclass
class SweepSpec:
    name: str
    path: Path
    space: str = ""  # empty for a grid sweep
    data: dict[str, Any] = field(default_factory=dict)
    fixed: dict[str, Any] = field(default_factory=dict)
    sampler: str = "tpe"
    grid: dict[str, list] = field(default_factory=dict)  # config key -> values, each coerced to the key's type
    metrics: list[str] = field(default_factory=lambda: ["val_macro_f1"])
    modes: list[str] = field(default_factory=lambda: ["max"])
    scheduler: dict[str, Any] = field(default_factory=lambda: {"type": "asha"})  # none by default with several metrics
    num_samples: int = 8
    max_concurrent: int = 2
    resources: dict[str, float] = field(default_factory=lambda: {"cpu": 1, "gpu": 0})
    seed: int = 0
    seeds: int = 1  # each sampled config runs this many times, with seeds seed, seed+1, ...; the searcher sees the mean
    cache: bool = True  # reuse trained generators, pools, the reference classifier and baselines across trials
    time_budget_s: float | None = None
    max_failures: int = 1
    optuna_storage: bool | str = False
    description: str = ""

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
    def grid_size(self) -> int:
        return math.prod(len(v) for v in self.grid.values()) if self.grid else 0

    def base_config(self) -> dict[str, Any]:
        """The fixed part of every trial's config: the data section and the sweep's fixed values."""
        return {**{f"data.{k}": v for k, v in self.data.items()}, **self.fixed}

    def storage_url(self, out: Path) -> str | None:
        """Where Optuna keeps the study (an SQLAlchemy URL), or None for in memory."""
        if self.optuna_storage is False:
            return None
        if self.optuna_storage is True:
            return f"sqlite:///{Path(out).resolve() / 'optuna.db'}"
        if "://" in self.optuna_storage:
            return self.optuna_storage
        return f"sqlite:///{(Path(out) / Path(self.optuna_storage).expanduser()).resolve()}"


def smoke_spec(spec: SweepSpec, trials: int | None = None) -> SweepSpec:
    """SPEC shrunk for `--smoke`: TRIALS (default SMOKE_TRIALS) trials of SMOKE_SET epochs, sizes capped by
    SMOKE_AT_MOST (in `fixed`, or for a key the grid varies, the grid's values within the cap), one seed, on the
    procedural set the per-class count targets scaled with its size, and a grid cut to its first points in the
    file's order (_first_points)."""
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
    shrink = data["scale"] / float(spec.data.get("scale", _data_default("scale"))) \
        if data.get("source", "procedural") == "procedural" else 1.0
    for key in SMOKE_COUNT_KEYS:
        if key in grid:
            grid[key] = list(dict.fromkeys(max(1, round(v * shrink)) if v else v for v in grid[key]))
        elif key in fixed:
            fixed[key] = max(1, round(fixed[key] * shrink)) if fixed[key] else fixed[key]
        elif spec.space:
            fixed[key] = SMOKE_COUNT_DRAWN
    fixed.update(SMOKE_SET)
    n = trials or min(spec.num_samples, SMOKE_TRIALS)
    return dataclasses.replace(spec, fixed=fixed, data=data, grid=_first_points(grid, n), num_samples=n, seeds=1)


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
    return next(p.default for p in cfg.DATA if p.name == name)


def config_key(name: str) -> str:
    """The config key a suggestion sets: `augment.filter@no_discriminator` -> `augment.filter`."""
    return name.partition("@")[0]


def flat_config(values: dict[str, Any]) -> dict[str, Any]:
    """A sampled config with its suggestion names turned into config keys (see config_key)."""
    return {config_key(k): v for k, v in values.items()}


def gpu_problem(value: Any, zero_ok: bool = True) -> str | None:
    """Why VALUE cannot be a trial's GPU share, or None: Ray gives a trial part of one GPU or whole GPUs."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return f"expected a number of GPUs per trial, got {value!r}"
    if (value == 0 and zero_ok) or 0 < value <= 1 or (value > 1 and float(value).is_integer()):
        return None
    return f"expected a fraction of one GPU in (0, 1] or a whole number of GPUs, got {value!r}"


def set_gpus_per_trial(spec: SweepSpec, value: float) -> None:
    """`fersweep run --gpus-per-trial F`: override the sweep file's resources.gpu."""
    problem = gpu_problem(value, zero_ok=False)
    if problem:
        raise SweepError(f"--gpus-per-trial: {problem}")
    spec.resources["gpu"] = int(value) if float(value).is_integer() else float(value)


class _FixedTrial:
    """An Optuna trial whose suggest_* calls return the fixed value for fixed keys instead of asking Optuna."""

    def __init__(self, trial, fixed: dict[str, Any]):
        self._trial, self._fixed = trial, fixed

    def __getattr__(self, name):
        attr = getattr(self._trial, name)
        if not name.startswith("suggest_"):
            return attr

        def suggest(key, *args, **kwargs):
            return self._fixed[config_key(key)] if config_key(key) in self._fixed else attr(key, *args, **kwargs)

        return suggest


class FixedSpace:
    """The sweep's define-by-run space with its fixed values laid over it; for a grid sweep, the grid's keys
    suggested as categoricals (Optuna's GridSampler then answers each with its point's value).

    A class, not a closure, because Ray pickles the searcher (and this with it) into the experiment checkpoint;
    it pickles as the space's name and file, and loads the function again where it is unpickled.
    """

    def __init__(self, space: str, sweep_path: Path | None, fixed: dict[str, Any],
                 grid: dict[str, list] | None = None):
        self.space, self.sweep_path, self.fixed = space, sweep_path, dict(fixed)
        self.grid = dict(grid or {})
        self._fn: Callable | None = None

    def __getstate__(self):
        return {**self.__dict__, "_fn": None}

    def __setstate__(self, state):
        self.__dict__.update({"grid": {}, **state})

    def __call__(self, trial) -> dict[str, Any]:
        for key, values in self.grid.items():
            trial.suggest_categorical(key, values)
        if not self.space:
            return dict(self.fixed)
        if self._fn is None:
            self._fn = load_space(self.space, self.sweep_path)
        returned = self._fn(_FixedTrial(trial, self.fixed)) or {}
        return {**returned, **self.fixed}


def search_space_dirs(sweep_path: Path | None = None) -> list[Path]:
    """Where search spaces are looked up: beside the sweep file's folder, the working folder, the repository."""
    dirs = []
    if sweep_path is not None:
        dirs.append(Path(sweep_path).resolve().parent.parent / "search_spaces")
    dirs += [Path.cwd() / "search_spaces", REPO_ROOT / "search_spaces"]
    return list(dict.fromkeys(d for d in dirs))


def sweep_dirs() -> list[Path]:
    return list(dict.fromkeys([Path.cwd() / "sweeps", REPO_ROOT / "sweeps"]))


def list_search_spaces() -> list[str]:
    """Files that define space(trial); their helpers (search_spaces/parts.py) are not spaces themselves."""
    names = set()
    for d in search_space_dirs():
        names.update(p.stem for p in d.glob("*.py")
                     if not p.stem.startswith("_") and "def space(" in p.read_text(errors="replace"))
    return sorted(names)


def list_sweeps() -> list[str]:
    names = set()
    for d in sweep_dirs():
        names.update(p.stem for p in d.glob("*.yaml"))
    return sorted(names)


def load_space(name: str, sweep_path: Path | None = None) -> Callable:
    """The define-by-run function `space(trial)` of search_spaces/NAME.py."""
    for d in search_space_dirs(sweep_path):
        path = d / f"{name}.py"
        if path.exists():
            module = _import_file(path)
            fn = getattr(module, "space", None)
            if not callable(fn):
                raise SweepError(f"{path}: defines no function space(trial)")
            return fn
    raise SweepError(f"space: no search space {name!r}; valid: {', '.join(list_search_spaces()) or '(none found)'}")


def _import_file(path: Path) -> types.ModuleType:
    """Execute PATH as a module of a package made for its folder, so `from .parts import ...` finds the sibling file
    whatever the working folder; each folder gets its own package, so two folders' parts.py never mix."""
    package = _folder_package(path.resolve().parent)
    spec = importlib.util.spec_from_file_location(f"{package}.{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _folder_package(folder: Path) -> str:
    name = f"{_PACKAGE}.f{hashlib.sha256(str(folder).encode()).hexdigest()[:12]}"
    for package, path in ((_PACKAGE, []), (name, [str(folder)])):
        if package not in sys.modules:
            module = types.ModuleType(package)
            module.__path__ = path  # A package: its submodules are the files of PATH.
            sys.modules[package] = module
    return name


def load_sweep(path: str | Path) -> SweepSpec:
    """Read and validate a sweep file; every problem is reported at once, each with its key."""
    path = Path(path)
    if not path.exists() and not path.suffix:
        for d in sweep_dirs():  # `fersweep run quickstart` finds sweeps/quickstart.yaml
            if (d / f"{path}.yaml").exists():
                path = d / f"{path}.yaml"
                break
    if not path.exists():
        raise SweepError(f"{path}: no such sweep file; known sweeps: {', '.join(list_sweeps())}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise SweepError(f"{path}:{where} not valid YAML: {getattr(e, 'problem', e)}") from None
    if not isinstance(raw, dict):
        raise SweepError(f"{path}: expected a mapping of sweep keys ({', '.join(sorted(TOP_KEYS))})")
    errors: list[str] = []
    for key in raw:
        if key not in TOP_KEYS:
            errors.append(f"{key}: unknown sweep key; valid: {', '.join(sorted(TOP_KEYS))}")
    spec = SweepSpec(name=str(raw.get("name", path.stem)), path=path.resolve(), space=str(raw.get("space") or ""),
                     description=str(raw.get("description", "")))
    _read_plain_keys(raw, spec, errors)
    _read_objectives(raw, spec, errors)
    _read_scheduler(raw, spec, errors)
    for key, value in spec.resources.items():
        if key not in ("cpu", "gpu"):
            errors.append(f"resources.{key}: unknown; valid: cpu, gpu")
        elif key == "gpu" and gpu_problem(value):
            errors.append(f"resources.gpu: {gpu_problem(value)}")
        elif not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
            errors.append(f"resources.{key}: expected a number >= 0, got {value!r}")
    # The data section and the fixed values must form a valid config on their own (defaults fill the rest).
    for key in spec.data:
        if f"data.{key}" not in cfg.all_keys():
            errors.append(f"data.{key}: unknown; valid: {', '.join(p.name for p in cfg.DATA)}")
    base_ok = True
    try:
        cfg.resolve(spec.base_config(), drop_inapplicable=True)
    except UserError as e:
        errors.extend(_lines(e))
        base_ok = False
    source = spec.data.get("source", "procedural")
    if source != "procedural" and not Path(source).exists():
        errors.append(f"data.source: {source}: no such file or folder")
    if spec.sampler == "grid":
        if spec.space:
            errors.append("space: a grid sweep enumerates its grid and names no space; put constants in fixed")
        if "grid" not in raw:
            errors.append("grid: missing; sampler: grid needs grid: {config key: [values]}")
        elif base_ok:
            _read_grid(raw["grid"], spec, errors)
        if "num_samples" not in raw and spec.grid:
            spec.num_samples = spec.grid_size
        elif spec.grid and spec.num_samples > spec.grid_size:
            errors.append(f"num_samples: {spec.num_samples} is more than the grid's {spec.grid_size} points; each "
                          f"point runs once (seeds: K repeats each)")
    else:
        if "grid" in raw:
            errors.append(f"grid: only for sampler: grid (this sweep's sampler is {spec.sampler})")
        if not spec.space:
            errors.append("space: missing; name a search space in search_spaces/")
        else:
            try:
                load_space(spec.space, path)
            except SweepError as e:
                errors.append(str(e))
            else:
                if base_ok:
                    _check_draws(spec, errors)
    if errors:
        raise SweepError(f"{path}: " + (errors[0] if len(errors) == 1 else
                                        f"{len(errors)} problems:\n  " + "\n  ".join(errors)))
    return spec


def _lines(e: UserError) -> list[str]:
    return str(e).removeprefix("invalid config:\n  ").split("\n  ")


def _read_plain_keys(raw: dict, spec: SweepSpec, errors: list[str]) -> None:
    for key, kind in (("data", dict), ("fixed", dict), ("resources", dict)):
        if key in raw:
            if not isinstance(raw[key], kind):
                errors.append(f"{key}: expected a mapping, got {raw[key]!r}")
            else:
                setattr(spec, key, dict(raw[key]))
    for key, low in (("num_samples", 1), ("max_concurrent", 1), ("seed", 0), ("seeds", 1), ("max_failures", 0)):
        if key in raw:
            value = raw[key]
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                errors.append(f"{key}: expected an integer >= {low}, got {value!r}")
            else:
                setattr(spec, key, value)
    if "sampler" in raw:
        if raw["sampler"] not in SAMPLERS:
            errors.append(f"sampler: expected one of {', '.join(SAMPLERS)}, got {raw['sampler']!r}")
        else:
            spec.sampler = raw["sampler"]
    if "cache" in raw:
        if not isinstance(raw["cache"], bool):
            errors.append(f"cache: expected true or false, got {raw['cache']!r}")
        else:
            spec.cache = raw["cache"]
    if raw.get("time_budget_s") is not None:
        value = raw["time_budget_s"]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
            errors.append(f"time_budget_s: expected a number of seconds > 0, got {value!r}")
        else:
            spec.time_budget_s = value
    if "optuna_storage" in raw:
        value = raw["optuna_storage"]
        if not isinstance(value, (bool, str)) or value == "":
            errors.append(f"optuna_storage: expected true, false, a file path or an SQLAlchemy URL, got {value!r}")
        else:
            spec.optuna_storage = value


def _read_objectives(raw: dict, spec: SweepSpec, errors: list[str]) -> None:
    metric = raw.get("metric", "val_macro_f1")
    metrics = metric if isinstance(metric, list) else [metric]
    if not metrics or not all(isinstance(m, str) and m for m in metrics):
        errors.append(f"metric: expected a metric name or a list of them (e.g. [val_macro_f1, train_seconds]), "
                      f"got {metric!r}")
        return
    for m in sorted({m for m in metrics if metrics.count(m) > 1}):
        errors.append(f"metric: {m} is listed twice")
    for m in metrics:
        if m.startswith("test_"):
            errors.append(f"metric: {m}: the test split is read once, at the end, and must not steer the search; "
                          f"use val_{m.removeprefix('test_')}")
    if "mode" not in raw:
        if len(metrics) > 1:
            errors.append(f"mode: missing; give one mode (max or min) per metric, e.g. mode: "
                          f"[{', '.join('max' for _ in metrics)}]")
            return
        modes = ["max"]
    else:
        mode = raw["mode"]
        modes = mode if isinstance(mode, list) else [mode]
        if not modes or not all(m in ("max", "min") for m in modes):
            errors.append(f"mode: expected max or min (a list of them for several metrics), got {mode!r}")
            return
        if len(modes) != len(metrics):
            errors.append(f"mode: {len(modes)} mode(s) for {len(metrics)} metric(s) ({', '.join(metrics)}); "
                          f"give one per metric")
            return
    spec.metrics, spec.modes = list(metrics), list(modes)


def _read_scheduler(raw: dict, spec: SweepSpec, errors: list[str]) -> None:
    if "scheduler" in raw:
        if not isinstance(raw["scheduler"], dict):
            errors.append(f"scheduler: expected a mapping, got {raw['scheduler']!r}")
            return
        spec.scheduler = dict(raw["scheduler"])
    elif spec.multi_objective:
        spec.scheduler = {}
    kind = spec.scheduler.setdefault("type", "none" if spec.multi_objective else "asha")
    if kind not in SCHEDULERS:
        errors.append(f"scheduler.type: expected one of {', '.join(SCHEDULERS)}, got {kind!r}")
    for key, value in spec.scheduler.items():
        if key not in ("type", "grace_period", "reduction_factor", "max_t"):
            errors.append(f"scheduler.{key}: unknown; valid: type, grace_period, reduction_factor, max_t")
        elif key == "reduction_factor" and not _number_above(value, 1, whole=False):
            errors.append(f"scheduler.reduction_factor: expected a number > 1, got {value!r}")
        elif key in ("grace_period", "max_t") and not _number_above(value, 0, whole=True):
            errors.append(f"scheduler.{key}: expected a whole number of epochs >= 1, got {value!r}")
    if kind == "asha":
        if spec.multi_objective:
            errors.append(f"scheduler.type: asha stops trials on one metric, which would cut the Pareto front of "
                          f"{', '.join(spec.metrics)} short; use scheduler: {{type: none}} (the default with several "
                          f"metrics)")
        elif not (spec.metric.startswith("val_") or spec.metric in EPOCH_METRICS):
            errors.append(f"scheduler.type: asha compares trials on {spec.metric} every epoch, but it is measured only "
                          f"at the end; use a val_ metric (e.g. val_macro_f1) or scheduler: {{type: none}}")


def _number_above(value: Any, low: float, whole: bool) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return False
    return value > low and (not whole or float(value).is_integer())


def _read_grid(grid: Any, spec: SweepSpec, errors: list[str]) -> None:
    """Check the grid and resolve every point with the fixed values; keep each value as its key's type."""
    if not isinstance(grid, dict) or not grid:
        errors.append(f"grid: expected a mapping of config keys to lists of values, e.g. "
                      f"{{classifier.backbone: [cnn3, linear]}}, got {grid!r}")
        return
    known = cfg.all_keys()
    keys = []  # the keys fit to resolve
    for key, values in grid.items():
        if key not in known:
            errors.append(f"grid.{key}: unknown key; valid keys: {', '.join(sorted(known))}")
        elif key.startswith("data."):
            errors.append(f"grid.{key}: the data set is loaded once per sweep; set data keys under data:")
        elif key in spec.fixed:
            errors.append(f"grid.{key}: also in fixed; a key is either fixed or on the grid")
        elif (not isinstance(values, list) or not values
              or not all(isinstance(v, (str, int, float, bool)) for v in values)):
            errors.append(f"grid.{key}: expected a non-empty list of values, got {values!r}")
        elif any(v in values[:i] for i, v in enumerate(values)):
            errors.append(f"grid.{key}: a value is listed twice in {values!r}")
        else:
            keys.append(key)
    canonical = {k: list(grid[k]) for k in keys}
    applies = dict.fromkeys(keys, False)
    found: dict[str, None] = {}  # ordered set: one line per distinct problem, however many points share it
    base = spec.base_config()
    for point in itertools.product(*(list(enumerate(grid[k])) for k in keys)):
        try:
            resolved = cfg.resolve({**base, **{k: v for k, (_, v) in zip(keys, point)}}, drop_inapplicable=True).flat()
        except ConfigError as e:
            for line in _lines(e):  # A fixed value may be invalid only for an entry the grid selects.
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
            owners = ", ".join(f"{section}.{cfg.SELECTORS[section][0]}={o}" for o in known[k] if o != "*")
            errors.append(f"grid.{k}: applies to no grid point with these fixed values (it belongs to {owners})")
        values = canonical[k]
        if any(v in values[:i] for i, v in enumerate(values)):
            errors.append(f"grid.{k}: two values are the same {k} ({values!r})")
    spec.grid = {k: canonical[k] for k in grid if k in canonical}


def _check_draws(spec: SweepSpec, errors: list[str]) -> None:
    """Draw a few configs from the space at random: each must resolve, and the space must not raise or vary a
    categorical's choices (Optuna refuses that mid-sweep), so such problems show before the sweep starts."""
    import optuna

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=spec.seed))
        space = FixedSpace(spec.space, spec.path, spec.base_config())
        found: dict[str, None] = {}
        for draw in range(1, SPACE_DRAWS + 1):
            trial = study.ask()
            try:
                returned = space(trial)
            except Exception as e:  # noqa: BLE001 - the space is the user's code; report what it raised
                errors.append(f"space: {spec.space} raised {type(e).__name__} on draw {draw}: {e}")
                return
            for key in flat_config(trial.params):
                if key.startswith("data."):
                    found[f"space: {spec.space} suggests {key}; the data set is loaded once per sweep, set it "
                          f"under data:"] = None
            try:
                cfg.resolve(flat_config({**trial.params, **returned}), drop_inapplicable=True)
            except ConfigError as e:
                found.update((f"space: {spec.space} drew an invalid config: {line}", None) for line in _lines(e))
        errors.extend(found)
    finally:
        optuna.logging.set_verbosity(verbosity)
