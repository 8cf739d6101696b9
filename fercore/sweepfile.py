"""Sweep files (sweeps/*.yaml): read safely, validated whole before anything starts, and the search spaces they name.

A sweep file is declarative: the data source, a search space (a define-by-run function in search_spaces/), fixed
values that override it, the sampler, the metric and mode, the scheduler, the trial budget and resources.
No Ray here: the sweep layer (fercore.sweep) turns a SweepSpec into a Ray Tune run.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

import yaml

from fercore import config as cfg
from fercore.errors import UserError

REPO_ROOT = Path(__file__).resolve().parent.parent
SAMPLERS = ("tpe", "random")
SCHEDULERS = ("asha", "none")
TOP_KEYS = {"name", "description", "data", "space", "fixed", "sampler", "metric", "mode", "scheduler",
            "num_samples", "max_concurrent", "resources", "seed", "seeds", "cache"}


class SweepError(UserError):
    """A sweep file that cannot run as written; lists every problem with its key."""


@dataclass
class SweepSpec:
    name: str
    path: Path
    space: str
    data: dict[str, Any] = field(default_factory=dict)
    fixed: dict[str, Any] = field(default_factory=dict)
    sampler: str = "tpe"
    metric: str = "val_macro_f1"
    mode: str = "max"
    scheduler: dict[str, Any] = field(default_factory=lambda: {"type": "asha"})
    num_samples: int = 8
    max_concurrent: int = 2
    resources: dict[str, float] = field(default_factory=lambda: {"cpu": 1, "gpu": 0})
    seed: int = 0
    seeds: int = 1  # each sampled config runs this many times, with seeds seed, seed+1, ...; the searcher sees the mean
    cache: bool = True  # reuse trained generators, pools, the reference classifier and baselines across trials
    description: str = ""

    def base_config(self) -> dict[str, Any]:
        """The fixed part of every trial's config: the data section and the sweep's fixed values."""
        return {**{f"data.{k}": v for k, v in self.data.items()}, **self.fixed}


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
    names = set()
    for d in search_space_dirs():
        names.update(p.stem for p in d.glob("*.py") if not p.stem.startswith("_"))
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


def _import_file(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"fercore_search_spaces.{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
    spec = SweepSpec(name=str(raw.get("name", path.stem)), path=path.resolve(), space=str(raw.get("space", "")),
                     description=str(raw.get("description", "")))
    for key, kind in (("data", dict), ("fixed", dict), ("scheduler", dict), ("resources", dict)):
        if key in raw:
            if not isinstance(raw[key], kind):
                errors.append(f"{key}: expected a mapping, got {raw[key]!r}")
            else:
                setattr(spec, key, dict(raw[key]))
    for key, kind in (("num_samples", int), ("max_concurrent", int), ("seed", int), ("seeds", int)):
        if key in raw:
            if not isinstance(raw[key], int) or isinstance(raw[key], bool) or raw[key] < (0 if key == "seed" else 1):
                errors.append(f"{key}: expected a positive integer, got {raw[key]!r}")
            else:
                setattr(spec, key, raw[key])
    for key, choices in (("sampler", SAMPLERS), ("mode", ("max", "min"))):
        if key in raw:
            if raw[key] not in choices:
                errors.append(f"{key}: expected one of {', '.join(choices)}, got {raw[key]!r}")
            else:
                setattr(spec, key, raw[key])
    if "cache" in raw:
        if not isinstance(raw["cache"], bool):
            errors.append(f"cache: expected true or false, got {raw['cache']!r}")
        else:
            spec.cache = raw["cache"]
    if "metric" in raw:
        spec.metric = str(raw["metric"])
    if spec.scheduler.get("type", "asha") not in SCHEDULERS:
        errors.append(f"scheduler.type: expected one of {', '.join(SCHEDULERS)}, got {spec.scheduler.get('type')!r}")
    for key in spec.scheduler:
        if key not in ("type", "grace_period", "reduction_factor", "max_t"):
            errors.append(f"scheduler.{key}: unknown; valid: type, grace_period, reduction_factor, max_t")
    for key, value in spec.resources.items():
        if key not in ("cpu", "gpu"):
            errors.append(f"resources.{key}: unknown; valid: cpu, gpu")
        elif not isinstance(value, (int, float)) or value < 0:
            errors.append(f"resources.{key}: expected a number >= 0, got {value!r}")
    if not spec.space:
        errors.append("space: missing; name a search space in search_spaces/")
    else:
        try:
            load_space(spec.space, path)
        except SweepError as e:
            errors.append(str(e))
    # The data section and the fixed values must form a valid config on their own (defaults fill the rest).
    for key in spec.data:
        if f"data.{key}" not in cfg.all_keys():
            errors.append(f"data.{key}: unknown; valid: {', '.join(p.name for p in cfg.DATA)}")
    try:
        cfg.resolve(spec.base_config(), drop_inapplicable=True)
    except UserError as e:
        errors.extend(str(e).removeprefix("invalid config:\n  ").split("\n  "))
    source = spec.data.get("source", "procedural")
    if source != "procedural" and not Path(source).exists():
        errors.append(f"data.source: {source}: no such file or folder")
    if errors:
        raise SweepError(f"{path}: " + (errors[0] if len(errors) == 1 else
                                        f"{len(errors)} problems:\n  " + "\n  ".join(errors)))
    return spec
