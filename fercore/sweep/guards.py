"""Guardrails that stop a sweep cleanly rather than let it run on into damage: too little free disk space (before the
sweep and before each trial), trials that keep failing (max_consecutive_errors), results that could not be written
(a full disk mid-flush), a lost lease (another driver took the sweep over: fercore.sweep.lease).

One Guard is shared by the results callback, which finds the reasons, and a Ray Tune Stopper, which stops every trial
once there is one; both sit in the RunConfig that Ray pickles whole, so a resumed sweep restores them still sharing
it. Trials cut off by a guard are not recorded: their rows would say "stopped" for a trial that should simply run
again, which `--resume` then does (fercore.sweep.state keeps them as running in the saved state).
"""
from __future__ import annotations

import shutil
from pathlib import Path

from ray import tune

from fercore.errors import UserError


class Guard:
    """Why the sweep must stop (None while it may go on), and the checks that say so."""

    def __init__(self, min_free_gb: float = 1.0, max_consecutive_errors: int = 10):
        self.min_free_gb = min_free_gb
        self.max_consecutive_errors = max_consecutive_errors
        self.reason: str | None = None
        self._errors_in_a_row = 0
        self.lease = None  # the driver's fercore.sweep.lease.Lease: a lost lease stops the sweep (never pickled)

    def __getstate__(self):
        return {**self.__dict__, "lease": None}

    def should_stop(self) -> bool:
        lost = getattr(self.lease, "lost", None)
        if lost:
            self.stop(lost)
        return self.reason is not None

    def stop(self, reason: str) -> None:
        if self.reason is None:  # the first reason is the one to act on
            self.reason = reason
            print(f"[stopping] {reason}", flush=True)

    def check_space(self, *folders: Path) -> None:
        """Stop when a folder the sweep writes has less than min_free_gb free."""
        problem = space_problem(self.min_free_gb, *folders)
        if problem:
            self.stop(problem)

    def trial_ended(self, status: str, trial_id: str, reason: str) -> None:
        """Count failures in a row; stop after max_consecutive_errors of them (a divergence is an outcome, not one)."""
        if status not in ("error", "oom"):
            self._errors_in_a_row = 0
            return
        self._errors_in_a_row += 1
        if self.max_consecutive_errors and self._errors_in_a_row >= self.max_consecutive_errors:
            self.stop(f"{self._errors_in_a_row} trials in a row failed (max_consecutive_errors="
                      f"{self.max_consecutive_errors}); the last, {trial_id}: {reason}")

    def raise_if_stopped(self, out: Path) -> None:
        if self.reason is not None:
            raise UserError(f"the sweep stopped: {self.reason}. Every trial recorded before is in {out}; fix the "
                            f"cause and run again with --resume to finish it")


def space_problem(min_free_gb: float, *folders: Path) -> str | None:
    """Why there is not enough free space under FOLDERS (the nearest existing parent of each is measured), or None."""
    for folder in folders:
        path = Path(folder)
        while not path.exists() and path != path.parent:
            path = path.parent
        free_gb = shutil.disk_usage(path).free / 1e9
        if free_gb < min_free_gb:
            return (f"{folder}: {free_gb:.2f} GB free, under min_free_gb={min_free_gb:g} (a full disk mid-write would "
                    f"fail every trial after it)")
    return None


class GuardStopper(tune.Stopper):
    """Ray Tune's side of the guard: every trial stops once the guard has a reason."""

    def __init__(self, guard: Guard):
        self.guard = guard

    def __call__(self, trial_id: str, result: dict) -> bool:
        return self.guard.should_stop()

    def stop_all(self) -> bool:
        return self.guard.should_stop()
