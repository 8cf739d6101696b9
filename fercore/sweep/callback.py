"""The driver side of a sweep: a Ray Tune callback that writes each reported epoch to epochs.parquet and TensorBoard,
and each finished trial (completed, stopped, diverged, failed) to trials.parquet, through fercore.results.

A trial's config comes from its worker, resolved there once and sent with its first report (fercore.sweep.trainable);
its row is that config, then what the trial's last report sent as its row (which may repeat the config keys), then
the driver's bookkeeping.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from ray import tune

from fercore.config import resolve
from fercore.errors import UserError
from fercore.results import ResultsStore, TensorBoardWriter
from fercore.sweep import internals, state
from fercore.sweep.guards import Guard
from fercore.sweep.searchers import TESTED
from fercore.sweep.trainable import CONFIG, EPOCH_VALUES, trial_config

RAY_KEYS = internals.ray_result_keys() | {"done", "trial_id", "experiment_tag", "should_checkpoint", "artifacts",
                                          "time_this_iter_s", "timesteps_total", "episodes_total", TESTED}
# Artifacts stored from the trial's last report, then dropped from the result Ray keeps as the trial's last result:
# Ray writes every trial's last result into its experiment state at each step of its loop, and a trial's test
# predictions (a row per test image) would make that state grow by their size with every finished trial.
STORED_ONLY = ("predictions",)
TUNE_DIR = "tune"  # Ray Tune's experiment state, under the sweep's results folder


class ResultsCallback(tune.Callback):
    """Driver side: each reported epoch -> epochs.parquet and TensorBoard; each finished trial -> trials.parquet."""

    def __init__(self, folder: Path, total: int, time_budget_s: float | None = None,
                 after_flush: Callable[[], None] | None = None, guard: Guard | None = None):
        self.folder = folder
        self.guard = guard or Guard()  # shared with the RunConfig's GuardStopper, which stops every trial
        self.after_flush = after_flush  # ResultsStore's hook: SweepFolder.push uploads the tables to a URI
        self.total = total
        self.time_budget_s = time_budget_s
        self._last: dict[str, dict[str, Any]] = {}
        self._artifacts: dict[str, dict] = {}
        self._configs: dict[str, dict[str, Any]] = {}  # trial id -> the resolved config its worker sent
        self._outcome: dict[str, tuple[str, str]] = {}  # trial id -> (status, reason) the trial reported itself
        self._running: set[str] = set()  # started and not yet recorded

    def setup(self, **info):
        # Ray calls this before the first trial, in a new run and in a restored one (which unpickles this callback
        # as it was when the sweep started): the tables are read here, as they are now, earlier runs' rows included.
        if getattr(self, "resuming", False) and info.get("total_num_samples") not in (None, self.total):
            # Ray failed to restore its state (it logs why) and carries on as a new experiment of this many trials,
            # which would end with the sweep's missing trials never run: stop before any trial starts.
            raise UserError(f"--resume: Ray Tune could not restore the sweep from {self.folder / TUNE_DIR} (its "
                            f"message is above) and would start a new experiment of "
                            f"{info.get('total_num_samples')} trials instead of finishing these {self.total}; "
                            f"nothing was run")
        self.store = ResultsStore(self.folder, after_flush=self.after_flush)
        self.tb = TensorBoardWriter(self.folder / "tb")
        self.finished = len(self.store.trials)
        self._recorded = set(self.store.trials)
        self._saved_trials = 0  # how many trials Ray's state held when it was last kept whole

    def on_step_end(self, iteration, trials, **info):
        # Ray saved its state earlier in this step (TUNE_GLOBAL_CHECKPOINT_S=0). Kept whole once per new trial,
        # before that trial can finish, so every row in trials.parquet names a trial the kept state knows (a trial
        # it holds as running whose row exists is re-reported on resume, not run; fercore/sweep/state.py says why).
        if len(trials) != self._saved_trials and trials:
            if state.save(internals.driver_staging_path(trials[0]), self.folder / state.TUNE_STATE):
                self._saved_trials = len(trials)

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k not in ("store", "tb")}

    def on_trial_start(self, iteration, trials, trial, **info):
        self._running.add(trial.trial_id)
        self.guard.check_space(self.folder)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if trial.trial_id in self._recorded:  # a resumed sweep's finished trial, re-reporting to the searcher
            return
        artifacts = dict(result.get("artifacts") or {})
        if CONFIG in artifacts:  # the first report's: the config as the worker resolved it, as (key, value) pairs
            self._configs[trial.trial_id] = dict(artifacts.pop(CONFIG))
        where = {"node_ip": result.get("node_ip", ""), "node_id": result.get("node_id", "")}
        if "epoch" not in result:  # The trial's own account of its end: it diverged, or its config cannot run.
            self._outcome[trial.trial_id] = (result.get("status", "error"), result.get("reason", ""))
            self._last.setdefault(trial.trial_id, where)
            return
        metrics = {k: v for k, v in result.items() if k not in RAY_KEYS and v is not None}
        # The last report's objectives are the row's (fercore.sweep.trainable); the epochs table keeps the epoch's own.
        metrics.update(artifacts.pop(EPOCH_VALUES, {}))
        if any(k in artifacts for k in STORED_ONLY):
            # Ray lets a callback change the result in place; it keeps it as the trial's last result after this call.
            result["artifacts"] = {k: v for k, v in result["artifacts"].items() if k not in STORED_ONLY}
        if artifacts:
            self._artifacts[trial.trial_id] = artifacts
        metrics["node_ip"] = where["node_ip"]
        metrics["time_total_s"] = result.get("time_total_s")
        self._last[trial.trial_id] = metrics
        self.store.add_epoch(trial.trial_id, {k: v for k, v in metrics.items() if k != "time_total_s"})
        self.tb.epoch(trial.trial_id, int(metrics.get("epoch", result.get("training_iteration", 0))), metrics)

    def on_trial_complete(self, iteration, trials, trial, **info):
        if trial.trial_id in self._outcome:
            status, reason = self._outcome.pop(trial.trial_id)
        elif "row" in self._artifacts.get(trial.trial_id, {}):
            status, reason = "completed", ""
        else:
            epoch = self._last.get(trial.trial_id, {}).get("epoch", 0)
            status, reason = "stopped", f"stopped early by the scheduler after epoch {epoch}"
        self._finish(trial, status, reason)

    def on_trial_recover(self, iteration, trials, trial, **info):
        print(f"[retry] trial {trial.trial_id} crashed ({_error_line(trial)}); starting attempt "
              f"{trial.num_failures + 1}", flush=True)

    def on_trial_error(self, iteration, trials, trial, **info):
        line = _error_line(trial)
        attempts = f" (after {trial.num_failures} attempts)" if trial.num_failures > 1 else ""
        self._finish(trial, _failure_status(line), line + attempts, attempts=trial.num_failures)

    def _finish(self, trial, status: str, reason: str, attempts: int | None = None) -> None:
        self._running.discard(trial.trial_id)
        if trial.trial_id in self._recorded:  # recorded before the sweep was resumed: exactly once
            return
        if self.guard.reason is not None and status == "stopped":
            print(f"[not recorded] trial {trial.trial_id}: cut off by the stop; --resume runs it again", flush=True)
            return
        config = self._config(trial)
        last = self._last.pop(trial.trial_id, {})
        artifacts = self._artifacts.pop(trial.trial_id, {})
        row = trial_row(trial.trial_id, config, artifacts.get("row"), last, status, reason,
                        attempts if attempts is not None else trial.num_failures + 1)
        self.store.add_trial(row)
        self.store.add_artifacts(trial.trial_id, artifacts)
        if not self._flush():
            return
        self.tb.finish(trial.trial_id, config, row, artifacts)
        self.finished += 1
        metric = ", ".join(f"{k}={row[k]:.3f}" for k in ("val_macro_f1", "test_macro_f1") if row.get(k) is not None)
        print(f"[{self.finished}/{self.total}] trial {trial.trial_id} {status} {metric} {reason}".rstrip(), flush=True)
        self.guard.trial_ended(status, trial.trial_id, reason)

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
        self._flush()
        self.tb.close()


def trial_row(trial_id: str, config: dict[str, Any], sent_row: dict[str, Any] | None, last: dict[str, Any],
              status: str, reason: str, attempts: int) -> dict[str, Any]:
    """One row of trials.parquet: the config, then the row the trial's last report sent (a completed trial's whole
    result; it may hold the config keys too) or, for a stopped or failed trial, its last epoch's metrics, then the
    driver's bookkeeping."""
    summary = sent_row or {k: v for k, v in last.items() if k.startswith(("val_", "train_loss"))}
    return {"trial_id": trial_id, **config, **summary, "status": status, "reason": reason,
            "epochs_run": last.get("epoch", 0), "node_ip": last.get("node_ip", ""),
            "node_id": last.get("node_id", ""),
            # Runs of this trial: a crash (not a divergence) is retried up to the sweep's max_failures times.
            "attempts": attempts,
            "train_seconds": summary.get("train_seconds", last.get("time_total_s"))}


def _failure_status(line: str) -> str:
    """What a failed trial's last error line says it was: diverged, oom (torch's or Ray's out-of-memory error,
    recorded after the retries), or error."""
    exception = line.split(":")[0]
    if "Diverged" in exception:
        return "diverged"
    if "OutOfMemoryError" in exception or "out of memory" in line.lower():
        return "oom"
    return "error"


def _error_line(trial) -> str:
    """The last line of the trial's traceback: the exception and its message."""
    path = trial.error_file
    if path and Path(path).exists():
        lines = [line for line in Path(path).read_text(errors="replace").splitlines() if line.strip()]
        if lines:
            return lines[-1].strip()[:500]
    return "the trial failed without an error message"
