"""Search spaces (search_spaces/*.py, define-by-run functions `space(trial)`) found, loaded and laid under a sweep's
fixed values; where sweep files are found. No Ray and no Optuna here: a space only calls the trial's suggest_*.

Spaces are loaded as modules of a package made for their folder, so a space can import its siblings relatively
(`from .parts import classifier`) whatever the working folder. A suggestion named `KEY@VARIANT` sets config key KEY:
Optuna fixes a categorical's choices per name, so a key whose choices depend on an earlier choice (augment.filter
without `discriminator` for a diffusion model) gets one name per variant.
"""
from __future__ import annotations

import hashlib
import importlib.util
import sys
import types
from pathlib import Path
from typing import Any, Callable

from fercore.sweep.keys import SweepError, space_problem

REPO_ROOT = Path(__file__).resolve().parent.parent.parent
_PACKAGE = "fercore_search_spaces"


def config_key(name: str) -> str:
    """The config key a suggestion sets: `augment.filter@no_discriminator` -> `augment.filter`."""
    return name.partition("@")[0]


def flat_config(values: dict[str, Any]) -> dict[str, Any]:
    """A sampled config with its suggestion names turned into config keys (see config_key)."""
    return {config_key(k): v for k, v in values.items()}


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
                 grid: dict[str, list] | None = None, space_file: Path | None = None):
        self.space, self.sweep_path, self.space_file, self.fixed = space, sweep_path, space_file, dict(fixed)
        self.grid = dict(grid or {})
        self._fn: Callable | None = None

    def __getstate__(self):
        return {**self.__dict__, "_fn": None}

    def __setstate__(self, state):
        self.__dict__.update({"grid": {}, "space_file": None, **state})

    def __call__(self, trial) -> dict[str, Any]:
        for key, values in self.grid.items():
            trial.suggest_categorical(key, values)
        if not self.space:
            return dict(self.fixed)
        if self._fn is None:
            self._fn = load_space(self.space, self.sweep_path, self.space_file)
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


def load_space(name: str, sweep_path: Path | None = None, space_file: Path | None = None) -> Callable:
    """The define-by-run function `space(trial)` of SPACE_FILE (given on the command line), else of
    search_spaces/NAME.py. NAME is a module name, never a path: a sweep file cannot make the driver run a file
    outside the search_spaces/ folders."""
    problem = space_problem(name) if space_file is None else None
    if problem:
        raise SweepError(problem)
    candidates = [Path(space_file)] if space_file is not None else [d / f"{name}.py"
                                                                    for d in search_space_dirs(sweep_path)]
    for path in candidates:
        if path.exists():
            module = _import_file(path)
            fn = getattr(module, "space", None)
            if not callable(fn):
                raise SweepError(f"{path}: defines no function space(trial)")
            return fn
    if space_file is not None:
        raise SweepError(f"--space-file: {space_file}: no such file")
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
