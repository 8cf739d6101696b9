"""The sweep layer, the only package that imports Ray: sweep files and their keys, search spaces, smoke runs, the
Ray Tune run (searchers, trainable, driver callback), its summary, storage URIs and resume state.

  keys.py        the sweep-file keys, declared as data          spec.py      SweepSpec and load_sweep
  checks.py      the grid's points and the space's draws resolved before a sweep starts
  spaces.py      search spaces found, loaded, laid under fixed values; FixedSpace
  smoke.py       `--smoke`: any sweep shrunk to tiny trials
  run.py         run_sweep (Ray)                                 searchers.py OptunaSearch, Repeater, grid (Ray)
  trainable.py   the worker's trial (Ray)                        callback.py  the driver's results callback (Ray)
  study.py       the kept Optuna study                           summary.py   the closing summary
  storage.py     --storage folders and URIs                      state.py     Ray's state kept whole for --resume
  internals.py   every private Ray/Optuna attribute reached, and the versions it was checked on

Only run, searchers, trainable and callback import Ray; `fersweep list` and sweep-file validation run without it.
The names below are exported lazily, so that `import fercore.sweep.spec` imports neither Ray nor anything else.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "run_sweep": "run",
    "SweepSpec": "spec", "load_sweep": "spec", "set_gpus_per_trial": "spec",
    "SweepError": "keys", "KEYS": "keys",
    "smoke_spec": "smoke",
    "FixedSpace": "spaces", "load_space": "spaces", "flat_config": "spaces", "list_search_spaces": "spaces",
    "list_sweeps": "spaces", "REPO_ROOT": "spaces",
    "SweepFolder": "storage",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
