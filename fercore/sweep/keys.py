"""The keys of a sweep file (sweeps/*.yaml), declared as data: each key's kind, range or choices, default and help,
as fercore.config's Param declares a config key. One table serves load_sweep (each value is checked against its
key here; the error names the key and what was expected), `fersweep list`, docs/sweeps.md's key table
(tests/test_sweep_keys.py keeps it the same as markdown_table()) and the end of this docstring. Rules that tie keys
together (one mode per metric, asha with one objective, a grid or a space) are in fercore.sweep.spec. No Ray here.
"""
from __future__ import annotations

import copy
import math
import re
from dataclasses import dataclass
from typing import Any, Callable

from fercore.errors import UserError

SAMPLERS = ("tpe", "random", "grid", "nsga2")
SCHEDULERS = ("asha", "none")
MODES = ("max", "min")
KINDS = ("text", "mapping", "bool", "int", "whole", "number", "choice", "custom")


# A sweep's name is a folder under --storage and a URI path segment: letters, digits, '.', '_', '-', never '.' or '..'.
_SWEEP_NAME = re.compile(r"[A-Za-z0-9._-]+")
# A space is a module of search_spaces/, named as Python names modules; a file elsewhere is given on the command line.
_SPACE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def name_problem(name: str) -> str | None:
    """Why NAME cannot name a sweep (its results folder), or None."""
    if not _SWEEP_NAME.fullmatch(name) or name in (".", ".."):
        return (f"name: {name!r} cannot name the results folder; expected letters, digits, '.', '_' or '-' (not "
                f"'.' or '..' alone)")
    return None


def space_problem(space: str) -> str | None:
    """Why SPACE cannot name a search space in a sweep file, or None: a module name only, never a path."""
    if space and not _SPACE_NAME.fullmatch(space):
        return (f"space: {space!r} is not the name of a module in search_spaces/ (letters, digits and '_'); a "
                f"sweep file names no paths: give a file elsewhere as `fersweep run SWEEP --space-file PATH`")
    return None


class SweepError(UserError):
    """A sweep file that cannot run as written; lists every problem with its key."""


@dataclass(frozen=True)
class SweepKey:
    """One sweep-file key. A dotted name (scheduler.grace_period) is a key of the mapping named before the dot.

    kind: text (any value, read as a string), mapping, bool, int, whole (an integral number, 2.0 too), number
    (finite), choice (one of `choices`), or custom (`accepts` says what is valid and `expected` what that is, or
    `explain` gives the whole problem)."""

    name: str
    kind: str
    default: Any = None
    help: str = ""
    low: float | None = None  # int, whole, number: the smallest valid value, excluded when `strict`
    strict: bool = False
    unit: str = ""  # whole, number: "seconds" makes "a number of seconds > 0"
    choices: tuple[str, ...] = ()
    none_ok: bool = False  # null (YAML ~) is valid and means the default
    default_text: str = ""  # the default as the docs say it, where the value alone would not tell
    expected_text: str = ""  # custom: what a valid value is
    accepts: Callable[[Any], bool] | None = None  # custom
    explain: Callable[[Any], str | None] | None = None  # custom with its own message: the problem, or None

    def __post_init__(self):
        assert self.kind in KINDS, f"{self.name}: kind {self.kind!r} is not one of {KINDS}"

    @property
    def expected(self) -> str:
        """What a valid value is, as the error message and the docs say it."""
        bound = "" if self.low is None else f" {'>' if self.strict else '>='} {_number(self.low)}"
        unit = f" of {self.unit}" if self.unit else ""
        return {"text": "any text", "mapping": "a mapping", "bool": "true or false",
                "int": f"an integer{bound}", "whole": f"a whole number{unit}{bound}",
                "number": f"a number{unit}{bound}", "choice": f"one of {', '.join(self.choices)}",
                }.get(self.kind, self.expected_text)

    @property
    def default_label(self) -> str:
        if self.default_text:
            return self.default_text
        if isinstance(self.default, bool):
            return str(self.default).lower()
        return "none" if self.default is None else str(self.default)

    def problem(self, value: Any) -> str | None:
        """'NAME: expected ..., got VALUE' when VALUE is not valid for this key, else None."""
        if value is None and self.none_ok:
            return None
        if self.explain is not None:
            why = self.explain(value)
            return f"{self.name}: {why}" if why else None
        return None if self._accepts(value) else f"{self.name}: expected {self.expected}, got {value!r}"

    def _accepts(self, value: Any) -> bool:
        if self.kind == "text":
            return True
        if self.kind == "mapping":
            return isinstance(value, dict)
        if self.kind == "bool":
            return isinstance(value, bool)
        if self.kind == "choice":
            return value in self.choices
        if self.kind == "custom":
            return self.accepts(value)
        numeric = isinstance(value, float) or isinstance(value, int) and not isinstance(value, bool)
        if not numeric or (self.kind == "int" and not isinstance(value, int)):
            return False
        if isinstance(value, float) and not math.isfinite(value):
            return False
        if self.kind == "whole" and not float(value).is_integer():
            return False
        return self.low is None or (value > self.low if self.strict else value >= self.low)

    def fresh_default(self) -> Any:
        """The default, a copy of its own (mappings are changed in place by the spec that holds them)."""
        return copy.deepcopy(self.default)


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _names(value: Any) -> list:
    return value if isinstance(value, list) else [value]


def _metric_names(value: Any) -> bool:
    names = _names(value)
    return bool(names) and all(isinstance(m, str) and m for m in names)


def _modes(value: Any) -> bool:
    names = _names(value)
    return bool(names) and all(m in MODES for m in names)


def _optuna_storage(value: Any) -> bool:
    return isinstance(value, (bool, str)) and value != ""


def gpu_problem(value: Any, zero_ok: bool = True) -> str | None:
    """Why VALUE cannot be a trial's GPU share, or None: Ray gives a trial part of one GPU or whole GPUs."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return f"expected a number of GPUs per trial, got {value!r}"
    if (value == 0 and zero_ok) or 0 < value <= 1 or (value > 1 and float(value).is_integer()):
        return None
    return f"expected a fraction of one GPU in (0, 1] or a whole number of GPUs, got {value!r}"


KEYS: tuple[SweepKey, ...] = (
    SweepKey("name", "text", None, default_text="the file's name",
             help="names the results folder (<storage>/<name>/) and the Optuna study: letters, digits, '.', '_', '-' "
                  "(not '.' or '..')"),
    SweepKey("description", "text", "", default_text="empty", help="a line for the report"),
    SweepKey("data", "mapping", {}, default_text="{}",
             help="data.* config keys without their section (source, scale, ...); the data set is loaded once per "
                  "sweep"),
    SweepKey("space", "text", "", default_text="none",
             help="a search space of search_spaces/ by module name (a define-by-run function; a file elsewhere "
                  "is given as `fersweep run --space-file PATH`, never as a path here); required unless sampler is "
                  "grid, which names none. Before the sweep starts it is drawn from at random: every draw must "
                  "resolve, set no data key and keep each categorical's choices"),
    SweepKey("fixed", "mapping", {}, default_text="{}",
             help="config keys set for every trial; they override the space's suggestions"),
    SweepKey("sampler", "choice", "tpe", choices=SAMPLERS,
             help="Optuna's sampler: tpe, random, nsga2 (NSGA-II, for several objectives), or grid: every point of "
                  "grid once (times seeds)"),
    SweepKey("grid", "custom", {}, default_text="{}",
             expected_text="a mapping of config keys to lists of values, e.g. {classifier.backbone: [cnn3, linear]}",
             accepts=lambda v: isinstance(v, dict) and bool(v),
             help="{config key: [values]}, only with sampler grid (its constants go in fixed). Each point is resolved "
                  "before the sweep starts: every value must be valid where its key applies, and every key must "
                  "apply to some point"),
    SweepKey("metric", "custom", "val_macro_f1",
             expected_text="a metric name or a list of them (e.g. [val_macro_f1, classifier_seconds])",
             accepts=_metric_names,
             help="the objective, or a list of them (the Pareto front is then marked in trials.parquet's pareto "
                  "column): a figure every epoch reports (val_*, train_loss, lr; the value told to Optuna is the "
                  "best epoch's, whose weights were tested) or a cost: classifier_seconds (the classifier's own "
                  "training, the cost objective), generator_seconds, paired_seconds, train_seconds (the whole "
                  "trial, cache hits included). A name with test in it is refused: the test split is read once, at "
                  "the end, and must not steer the search"),
    SweepKey("mode", "custom", "max", expected_text="max or min (a list of them for several metrics)",
             accepts=_modes, default_text="max (one per metric: required with several)",
             help="whether each metric is maximised or minimised"),
    SweepKey("scheduler", "mapping", {"type": "asha"}, default_text="{type: asha}",
             help="early stopping: the keys scheduler.* below"),
    SweepKey("scheduler.type", "choice", "asha", choices=SCHEDULERS, default_text="asha (none with several metrics)",
             help="asha stops weak trials on the first metric, which every epoch must report (val_*, train_loss, "
                  "lr); refused with several metrics, whose Pareto front it would cut short"),
    SweepKey("scheduler.grace_period", "whole", 1, low=1, unit="epochs",
             help="epochs every trial runs before ASHA may stop it"),
    SweepKey("scheduler.reduction_factor", "number", 2, low=1, strict=True,
             help="ASHA keeps one trial in this many at each rung"),
    SweepKey("scheduler.max_t", "whole", None, low=1, unit="epochs",
             default_text="fixed classifier.epochs, else 100", help="ASHA's last rung"),
    SweepKey("confirm", "mapping", {}, default_text="{} (no confirmation)",
             help="a confirmation phase after the search: the keys confirm.* below. The report's claims come from "
                  "its trials only; the search's are shown as exploration"),
    SweepKey("confirm.top", "int", 0, low=0,
             help="the configs the search ranks best by the first metric (its mean over a config's seeds and, "
                  "k-fold, its folds; configs with a seed stopped or failed are not ranked) run again to completion, "
                  "with no scheduler and no time budget; 0: no confirmation phase"),
    SweepKey("confirm.seeds", "int", 5, low=1,
             help="fresh seeds (after every seed the search used) each confirmed config runs with, k-fold on every "
                  "fold its search ran; the report makes no claim on fewer than 5"),
    SweepKey("num_samples", "int", 8, low=1, default_text="8 (a grid: its number of points)",
             help="trials to run (times seeds)"),
    SweepKey("max_concurrent", "int", 2, low=1, help="trials running at once"),
    SweepKey("seed", "int", 0, low=0, help="seeds the sampler and the trials (seed is a config key too)"),
    SweepKey("seeds", "int", 1, low=1,
             help="each sampled config runs with seeds seed, seed+1, ...; Optuna sees the mean of each objective"),
    SweepKey("cache", "bool", True,
             help="reuse trained generators, pools, the reference classifier and real-only baselines across trials"),
    SweepKey("cache_max_gb", "number", None, low=0, strict=True, unit="GB", none_ok=True,
             help="the cache's size limit: beyond it the least recently used entries no running trial holds are "
                  "evicted (built again if a later trial needs them); none: no limit"),
    SweepKey("time_budget_s", "number", None, low=0, strict=True, unit="seconds", none_ok=True,
             help="stop the sweep after this many seconds; trials running then are recorded as stopped"),
    SweepKey("max_failures", "int", 1, low=0,
             help="retries of a trial that crashed (a lost node, out of memory); a trial that diverged or whose "
                  "config cannot run is recorded at once and never retried"),
    SweepKey("max_consecutive_errors", "int", 10, low=0,
             help="stop the sweep after this many trials in a row ended in error or oom (0: never); it exits non-zero "
                  "and --resume finishes it once the cause is fixed"),
    SweepKey("min_free_gb", "number", 1.0, low=0, unit="GB",
             help="free disk space the results folder and the cache need, checked before the sweep and before each "
                  "trial: below it the sweep stops cleanly (trials cut off run again on --resume)"),
    SweepKey("optuna_storage", "custom", False,
             expected_text="true, false, a file path, journal:PATH or an SQLAlchemy URL", accepts=_optuna_storage,
             help="true keeps the Optuna study (named after the sweep) in <results>/<name>/optuna.db for "
                  "optuna-dashboard; a file path (relative: in the results folder; .log or .journal, or journal:PATH: "
                  "Optuna's journal file, for a shared file system) or an SQLAlchemy URL (postgresql://user:pw@host/db "
                  "where many sweeps and dashboards meet; its password is never printed); a new run with the same "
                  "storage continues the study"),
    SweepKey("resources", "mapping", {"cpu": 1, "gpu": 0}, default_text="{cpu: 1, gpu: 0}",
             help="what each trial gets: the keys resources.* below"),
    SweepKey("resources.cpu", "number", 1, low=0, help="CPU cores per trial"),
    SweepKey("resources.gpu", "custom", 0, expected_text="a fraction of one GPU in (0, 1] or a whole number",
             explain=gpu_problem, help="GPUs per trial; fersweep run --gpus-per-trial F overrides it"),
)
BY_NAME = {key.name: key for key in KEYS}
TOP_LEVEL = tuple(key.name for key in KEYS if "." not in key.name)


def sub_keys(mapping: str) -> tuple[SweepKey, ...]:
    """The declared keys of the mapping MAPPING (scheduler -> scheduler.type, ...)."""
    return tuple(key for key in KEYS if key.name.startswith(f"{mapping}."))


def default(name: str) -> Any:
    """Key NAME's default value (a fresh copy)."""
    return BY_NAME[name].fresh_default()


def text_table() -> str:
    """The keys as lines of text: `fersweep list` and this module's docstring."""
    width = max(len(key.name) for key in KEYS)
    return "\n".join(f"  {key.name:<{width}}  {key.expected}; default {key.default_label}\n"
                     f"  {'':<{width}}  {key.help}" for key in KEYS)


def markdown_table() -> str:
    """The keys as docs/sweeps.md's table."""
    lines = ["| key | valid values | default | what it does |", "| --- | --- | --- | --- |"]
    lines += [f"| `{key.name}` | {_cell(key.expected)} | {_cell(key.default_label)} | {_cell(key.help)} |"
              for key in KEYS]
    return "\n".join(lines)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("<", "&lt;")  # a bare < would open an HTML tag


if __doc__:  # None under python -OO
    __doc__ += "\nThe keys (every one optional but space, which a grid sweep must not have):\n" + text_table() + "\n"
