"""The driver side of a sweep: a Ray Tune callback that writes each reported epoch to TensorBoard as it comes, and
each finished trial (completed, stopped, diverged, failed) to trials.parquet with its epochs (epochs.parquet) and
artifacts, through fercore.results.

A trial's config comes from its worker, resolved there once and sent with its first report (fercore.sweep.trainable);
its row is that config, then the row its artifact file holds (fercore.sweep.inbox; it may repeat the config keys),
then the driver's bookkeeping.

Rows are committed when Ray has saved its experiment state, together with a snapshot of that state
(fercore.sweep.state says why), so a finished trial's row appears up to one save period (10 s or more) after it ends;
its progress line is printed then. The cost of a commit does not grow with the sweep, and Ray saves at its own pace.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ray import tune

from fercore.atomic import atomic_write
from fercore.config import resolve
from fercore.errors import UserError
from fercore.results import ResultsStore, TensorBoardWriter
from fercore.results import artifact_file
from fercore.sweep import inbox, internals, state
from fercore.sweep.confirm import PHASE, SEARCH
from fercore.sweep.guards import Guard
from fercore.results.rows import FAILED
from fercore.sweep.progress import Progress
from fercore.sweep.searchers import TESTED
from fercore.sweep.trainable import CONFIG, EPOCH_METRICS, TRACEBACK, trial_config
from fercore.train import early_stop_score

RAY_KEYS = internals.ray_result_keys() | {"done", "trial_id", "experiment_tag", "should_checkpoint", "artifacts",
                                          "time_this_iter_s", "timesteps_total", "episodes_total", TESTED}
TUNE_DIR = "tune"  # Ray Tune's experiment state, under the sweep's results folder
LOGS_DIR = "logs"  # a failed trial's full log (reason and traceback), under the sweep's results folder
# What TensorBoardWriter.finish reads of a trial's artifacts (confusion_png: the matrix as its worker rendered it).
TENSORBOARD_ARTIFACTS = ("classes", "samples_png", "confusion", "confusion_png")


@dataclass
class _Staged:
    """A finished trial whose rows wait for the commit that comes with Ray's next save."""
    trial_id: str
    config: dict[str, Any]
    row: dict[str, Any]
    artifacts: dict[str, Any]
    epochs: list[dict[str, Any]]


class ResultsCallback(tune.Callback):
    """Driver side: each reported epoch -> TensorBoard; each finished trial -> trials.parquet, epochs.parquet and
    the artifact tables, together."""

    def __init__(self, folder: Path, total: int, time_budget_s: float | None = None,
                 after_flush: Callable[[], None] | None = None, guard: Guard | None = None, phase: str = SEARCH,
                 samples: int | None = None, view: dict[str, Any] | None = None):
        self.folder = folder
        # What the progress view needs (fercore.sweep.progress): the sweep's name, metric, mode and concurrency.
        self.view = view or {}
        self.phase = phase  # every row's `phase` column (fercore.sweep.confirm)
        self.samples = total if samples is None else samples  # Ray's trials in this phase (total: in the sweep)
        self.guard = guard or Guard()  # shared with the RunConfig's GuardStopper, which stops every trial
        self.after_flush = after_flush  # ResultsStore's hook: SweepFolder.push uploads the tables to a URI
        self.total = total
        self.time_budget_s = time_budget_s
        self._last: dict[str, dict[str, Any]] = {}
        self._epochs: dict[str, list[dict[str, Any]]] = {}  # trial id -> its epochs so far (running trials only)
        self._artifacts: dict[str, dict] = {}
        self._configs: dict[str, dict[str, Any]] = {}  # trial id -> the resolved config its worker sent
        # trial id -> (status, reason, traceback) the trial reported itself
        self._outcome: dict[str, tuple[str, str, str]] = {}
        self._running: set[str] = set()  # started and not yet recorded

    def setup(self, **info):
        # Ray calls this before the first trial, in a new run and in a restored one (which unpickles this callback
        # as it was when the sweep started): the tables are read here, as they are now, earlier runs' rows included.
        if getattr(self, "resuming", False) and info.get("total_num_samples") not in (None, self._samples):
            # Ray failed to restore its state (it logs why) and carries on as a new experiment of this many trials,
            # which would end with the sweep's missing trials never run: stop before any trial starts.
            raise UserError(f"--resume: Ray Tune could not restore the sweep from {self.folder / TUNE_DIR} (its "
                            f"message is above) and would start a new experiment of "
                            f"{info.get('total_num_samples')} trials instead of finishing these {self._samples}; "
                            f"nothing was run")
        self.store = ResultsStore(self.folder, after_flush=self.after_flush)
        self.tb = TensorBoardWriter(self.folder / "tb")
        self._recorded = set(self.store.trial_ids())
        self._staged: list[_Staged] = []  # finished, rows staged, not committed yet
        self._state_file: Path | None = None  # Ray's experiment state in its driver staging folder
        self._state_stamp: tuple[int, int] | None = None  # ... as last seen
        self._known: set[str] = set()  # the trials the last committed snapshot of Ray's state holds
        inbox.clear(self.folder)  # an earlier driver's uncommitted artifact files: their trials run again
        view = getattr(self, "view", None) or {}  # (a callback pickled before the view existed has none)
        metric = view.get("metric", "val_macro_f1")
        self.progress = Progress(self.folder, view.get("name", self.folder.name), self.total, metric,
                                 view.get("mode", "max"), self._phase, recorded=self.store.trial_rows(),
                                 concurrency=view.get("concurrency", 1), live=view.get("live"))

    def on_step_end(self, iteration, trials, **info):
        if trials:
            self._commit_with_saved_state(trials)
        self.progress.refresh()

    def _commit_with_saved_state(self, trials) -> bool:
        """When Ray saved its state since the last look (it saves in its loop's step, before this callback's
        on_step_end), commit what is staged with a snapshot of it: the snapshot holds every staged trial as
        finished, and every trial with a row. False when Ray has not saved since."""
        staging = internals.driver_staging_path(trials[0])
        if self._state_file is None:  # found once: its name is fixed for the session
            self._state_file = state.experiment_state_file(staging)
        stamp = state.stamp(self._state_file) if self._state_file is not None else None
        if stamp is None or stamp == self._state_stamp:
            return False
        self._state_stamp = stamp
        if not self._staged and not self.store.dirty:
            return True
        snapshot = state.snapshot(staging)
        if snapshot is None:
            return False
        self.store.attach(state.attachment(self._phase), snapshot, ".zip")
        self._commit()
        self._known = {t.trial_id for t in trials}
        return True

    def _commit(self) -> None:
        """Commit the staged trials' rows (with what the store has staged: epochs, an attachment); then what follows."""
        for t in self._staged:  # again after a failed commit: a key's staged rows are replaced, not doubled
            self.store.add_trial(t.row)
            self.store.add_epochs(t.trial_id, t.epochs)
            if t.artifacts:
                # A staged trial holds its artifact file's JSON part; its arrays (~1 MB of predictions) are read
                # now, so that what waits for Ray's next save does not grow with how many trials finish meanwhile.
                full = self._read_artifacts(t.trial_id)
                self.store.add_artifacts(t.trial_id, full)
                t.artifacts = {k: full[k] for k in TENSORBOARD_ARTIFACTS if k in full}
        if self._flush():
            self._committed()

    def _committed(self) -> None:
        """What follows the staged trials' commit: each one's TensorBoard summary and progress line; its artifact
        file goes."""
        for t in self._staged:
            self.tb.finish(t.trial_id, t.config, t.row, t.artifacts)
            # Validation only while the sweep runs (fercore.sweep.progress); the final summary gives test figures.
            self.progress.trial_recorded(t.trial_id, t.row)
            inbox.artifact_path(self.folder, t.trial_id).unlink(missing_ok=True)
        self._staged = []

    @property
    def _phase(self) -> str:
        return getattr(self, "phase", SEARCH)  # a callback pickled before phases existed ran a search

    @property
    def _samples(self) -> int:
        return getattr(self, "samples", self.total)

    def __getstate__(self):
        # Ray pickles its callbacks with every save of its state: what is staged or in flight stays out (a resumed
        # sweep runs those trials again).
        transient = ("store", "tb", "_staged", "_artifacts", "_last", "_epochs", "_configs", "_outcome", "progress")
        return {k: v for k, v in self.__dict__.items() if k not in transient}

    def __setstate__(self, saved):
        self.__dict__.update(saved)
        self._last, self._epochs, self._artifacts, self._configs, self._outcome = {}, {}, {}, {}, {}

    def on_trial_start(self, iteration, trials, trial, **info):
        self._running.add(trial.trial_id)
        if trial.trial_id not in self._recorded:
            self.progress.trial_started(trial.trial_id)
        self.guard.check_space(self.folder)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if trial.trial_id in self._recorded:  # a resumed sweep's finished trial, re-reporting to the searcher
            return
        artifacts = dict(result.get("artifacts") or {})
        if CONFIG in artifacts:  # the first report's: the config as the worker resolved it, as (key, value) pairs
            self._configs[trial.trial_id] = dict(artifacts.pop(CONFIG))
        where = {"node_ip": result.get("node_ip", ""), "node_id": result.get("node_id", "")}
        if "epoch" not in result:  # The trial's own account of its end: it diverged, or its config cannot run.
            self._outcome[trial.trial_id] = (result.get("status", "error"), result.get("reason", ""),
                                             result.get(TRACEBACK) or "")
            self._last.setdefault(trial.trial_id, where)
            return
        metrics = {k: v for k, v in result.items() if k not in RAY_KEYS and v is not None}
        # The epoch's figures come as pairs (fercore.sweep.trainable says why), the last report's in its artifact file
        # (fercore.sweep.inbox). Its objectives are the row's; the epochs table keeps the epoch's own.
        pairs = metrics.pop(EPOCH_METRICS, ())
        if result.get(TESTED):
            artifacts = self._read_artifacts(trial.trial_id, arrays=False)  # the arrays are read at the commit
            pairs = artifacts.pop(EPOCH_METRICS, ())
            self._artifacts[trial.trial_id] = artifacts
        metrics.update((k, v) for k, v in pairs if v is not None)
        metrics["node_ip"] = where["node_ip"]
        metrics["time_total_s"] = result.get("time_total_s")
        self._last[trial.trial_id] = metrics
        epoch = {k: v for k, v in metrics.items() if k != "time_total_s"}
        # Kept until the trial ends, then committed with its row. An epoch it reported before is a new attempt (a
        # crash retried): that attempt's epochs replace those from it on.
        epochs = self._epochs.setdefault(trial.trial_id, [])
        epochs[:] = [e for e in epochs if e.get("epoch", 0) < epoch.get("epoch", 0)] + [epoch]
        self.tb.epoch(trial.trial_id, int(metrics.get("epoch", result.get("training_iteration", 0))), metrics,
                      self._configs.get(trial.trial_id))
        self.progress.trial_epoch(trial.trial_id, int(metrics.get("epoch", 0)), metrics.get(self.progress.metric),
                                  self._configs.get(trial.trial_id))

    def _read_artifacts(self, trial_id: str, arrays: bool = True) -> dict[str, Any]:
        path = inbox.artifact_path(self.folder, trial_id)
        try:
            return artifact_file.decode(path, str(path), arrays=arrays)
        except (OSError, UserError) as e:  # recorded without them (a row then its last epoch's), and the loss said
            print(f"[results] trial {trial_id}: its artifact file could not be read ({e}); recorded without what "
                  f"it held", flush=True)
            return {}

    def on_trial_complete(self, iteration, trials, trial, **info):
        trace = ""
        if trial.trial_id in self._outcome:
            status, reason, trace = self._outcome.pop(trial.trial_id)
        elif "row" in self._artifacts.get(trial.trial_id, {}):
            status, reason = "completed", ""
        else:
            epoch = self._last.get(trial.trial_id, {}).get("epoch", 0)
            status, reason = "stopped", f"stopped early by the scheduler after epoch {epoch}"
        self._finish(trial, status, reason, trace=trace)

    def on_trial_recover(self, iteration, trials, trial, **info):
        print(f"[retry] trial {trial.trial_id} crashed ({_error_line(trial)}); starting attempt "
              f"{trial.num_failures + 1}", flush=True)

    def on_trial_error(self, iteration, trials, trial, **info):
        line = _error_line(trial)
        attempts = f" (after {trial.num_failures} attempts)" if trial.num_failures > 1 else ""
        self._finish(trial, _failure_status(line), line + attempts, attempts=trial.num_failures,
                     trace=_error_text(trial))

    def _finish(self, trial, status: str, reason: str, attempts: int | None = None, trace: str = "") -> None:
        self._running.discard(trial.trial_id)
        # Ray called this callback last (after its scheduler and searcher): what it keeps of the trial from now on
        # is kept for the whole sweep and saved with its state at every save, so only what it still needs stays.
        internals.lighten_finished(trial, drop=(EPOCH_METRICS, "artifacts"))
        if trial.trial_id in self._recorded:  # recorded before the sweep was resumed: exactly once
            return
        if self.guard.reason is not None and status == "stopped":
            print(f"[not recorded] trial {trial.trial_id}: cut off by the stop; --resume runs it again", flush=True)
            return
        config = self._config(trial)
        last = self._last.pop(trial.trial_id, {})
        artifacts = self._artifacts.pop(trial.trial_id, {})
        epochs = self._epochs.pop(trial.trial_id, [])
        row = trial_row(trial.trial_id, config, artifacts.get("row"), last, status, reason,
                        attempts if attempts is not None else trial.num_failures + 1, epochs)
        row[PHASE] = self._phase
        if status in FAILED:  # its one line names the log that holds the rest
            row["log"], row["at"] = self._write_log(trial.trial_id, reason, trace), _fault_site(trace)
        self._staged.append(_Staged(trial.trial_id, config, row, artifacts, epochs))
        self.guard.trial_ended(status, trial.trial_id, reason)  # now, not at the commit: a failing sweep stops soon

    def _write_log(self, trial_id: str, reason: str, trace: str) -> str:
        """The failed trial's full log, LOGS_DIR/<trial id>.log in the results folder: its reason and traceback.
        Returns its path relative to the folder ('' when it could not be written: a full disk)."""
        rel = f"{LOGS_DIR}/{trial_id}.log"
        text = f"{reason}\n\n{trace or '(no traceback: the trial reported how it ended)'}\n"
        try:
            (self.folder / LOGS_DIR).mkdir(parents=True, exist_ok=True)
            atomic_write(self.folder / rel, lambda f: f.write(text.encode()))
        except OSError:
            return ""
        return rel

    def _flush(self) -> bool:
        """Commit the staged rows; a write that fails (a full disk) commits nothing and stops the sweep cleanly."""
        try:
            self.store.flush()
            return True
        except OSError as e:
            self.guard.stop(f"writing the results to {self.folder} failed ({e}); nothing of it was committed")
            return False

    def _config(self, trial) -> dict[str, Any]:
        """The trial's resolved flat config, as its worker sent it. A trial that ended before its first report (a
        crash, or a time budget that ran out, before its first epoch) sent none: Ray's config is resolved here as
        the worker would have, so that its row has every key too; one that does not resolve is kept as Ray's."""
        sent = self._configs.pop(trial.trial_id, None)
        if sent is not None:
            return sent
        raw = trial_config(trial.config)
        try:
            return resolve(raw, drop_inapplicable=True).flat(applicable_only=True)
        except UserError:
            return raw

    def on_experiment_end(self, trials, **info):
        # Trials still running when the sweep ends (its time budget ran out) get no completion call from Ray.
        for trial in trials:
            if trial.trial_id in self._running:
                epoch = self._last.get(trial.trial_id, {}).get("epoch", 0)
                why = (f"the sweep's time budget (time_budget_s={self.time_budget_s}) ran out"
                       if self.time_budget_s else "the sweep ended")
                self._finish(trial, "stopped", f"{why} after epoch {epoch}")
        # Ray saved its state once more when its loop ended (after the last trial finished, before this call).
        # When it could not (its loop raised), only the trials the last committed snapshot knows are committed: a
        # resumed sweep re-reports those, and runs the others again.
        if not trials or not self._commit_with_saved_state(trials):
            self._staged = [t for t in self._staged if t.trial_id in self._known]
            self._commit()
        self.tb.close()
        self.progress.close(self.guard.reason)


def trial_row(trial_id: str, config: dict[str, Any], sent_row: dict[str, Any] | None, last: dict[str, Any],
              status: str, reason: str, attempts: int, epochs: list[dict[str, Any]] = ()) -> dict[str, Any]:
    """One row of trials.parquet: the config, then the row the trial's last report sent (a completed trial's whole
    result; it may hold the config keys too) or, for a stopped or failed trial, the validation figures of its best
    epoch (of EPOCHS, by the trial's early-stopping score, as a completed trial's are), then the driver's
    bookkeeping."""
    if sent_row:
        summary = sent_row
    else:
        best = best_epoch(epochs, config) or last
        summary = {k: v for k, v in best.items() if k.startswith(("val_", "train_loss"))}
        if best.get("epoch"):
            summary["best_epoch"] = best["epoch"]
    return {"trial_id": trial_id, **config, **summary, "status": status, "reason": reason,
            "epochs_run": last.get("epoch", 0), "node_ip": last.get("node_ip", ""),
            "node_id": last.get("node_id", ""),
            # Runs of this trial: a crash (not a divergence) is retried up to the sweep's max_failures times.
            "attempts": attempts,
            "train_seconds": summary.get("train_seconds", last.get("time_total_s"))}


def best_epoch(epochs: list[dict[str, Any]], config: dict[str, Any]) -> dict[str, Any] | None:
    """The epoch whose weights the trial would have tested: the first with the best score under the trial's
    classifier.early_stop (fercore.train.early_stop_score, the trainer's own rule); None without epochs that have
    one (absent or NaN)."""
    early_stop = config.get("classifier.early_stop")
    scored = [(score, i) for i, e in enumerate(epochs)
              if (score := early_stop_score(e, early_stop)) is not None and score == score]
    if not scored:
        return None
    return epochs[max(scored, key=lambda si: (si[0], -si[1]))[1]]  # the first of equal scores, as the trainer keeps


def _failure_status(line: str) -> str:
    """What a failed trial's last error line says it was: diverged, oom (torch's or Ray's out-of-memory error,
    recorded after the retries), or error."""
    exception = line.split(":")[0]
    if "Diverged" in exception:
        return "diverged"
    if "OutOfMemoryError" in exception or "out of memory" in line.lower():
        return "oom"
    return "error"


def _error_text(trial) -> str:
    """The whole of Ray's error file of TRIAL (its traceback), or ''."""
    path = trial.error_file
    if path and Path(path).exists():
        return re.sub(r"\x1b\[[0-9;]*m", "", Path(path).read_text(errors="replace"))  # Ray colours its frames
    return ""


def _fault_site(trace: str) -> str:
    """Where a traceback's innermost frame is (file:line), '' without one."""
    sites = re.findall(r'File "([^"]+)", line (\d+)', trace or "")
    if not sites:
        return ""
    file, line = sites[-1]
    return f"{file}:{line}"


def _error_line(trial) -> str:
    """The last line of the trial's traceback: the exception and its message."""
    path = trial.error_file
    if path and Path(path).exists():
        lines = [line for line in Path(path).read_text(errors="replace").splitlines() if line.strip()]
        if lines:
            return lines[-1].strip()[:500]
    return "the trial failed without an error message"
