"""The sweep's Optuna study when it is kept (sweep key optuna_storage): opened before the sweep, so that a study of
the same name with other objectives is refused, and closed after it, so that no trial stays RUNNING there.
"""
from __future__ import annotations

from pathlib import Path

import optuna

from fercore.errors import UserError
from fercore.redact import redact
from fercore.sweep.spec import JOURNAL, SweepSpec


def open_storage(spec: SweepSpec, out: Path) -> optuna.storages.BaseStorage | None:
    """The sweep's `optuna_storage` opened (None: the study is kept in memory); a study of the sweep's name already
    there continues, so it must have the same objectives."""
    url = spec.storage_url(out)
    if url is None:
        return None
    storage = open_url(url)
    try:
        study_id = storage.get_study_id_from_name(spec.name)
    except KeyError:
        return storage
    wanted = [optuna.study.StudyDirection.MAXIMIZE if m == "max" else optuna.study.StudyDirection.MINIMIZE
              for m in spec.modes]
    if storage.get_study_directions(study_id) != wanted:
        raise UserError(f"optuna_storage: {redact(url)} holds a study {spec.name!r} with other objectives than this "
                        f"sweep's "
                        f"{', '.join(spec.metrics)} ({', '.join(spec.modes)}); give this sweep another file")
    return storage


def open_url(url: str) -> optuna.storages.BaseStorage:
    """Optuna's storage at URL: its journal file (a shared file system) or a database (SQLite, PostgreSQL, MySQL)."""
    if url.startswith(JOURNAL):
        path = Path(url.removeprefix(JOURNAL + "//"))
        path.parent.mkdir(parents=True, exist_ok=True)
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    try:
        return optuna.storages.RDBStorage(url)
    except ImportError as e:  # Optuna's own message names no driver
        raise UserError(f"optuna_storage: {redact(url)} needs a database driver SQLAlchemy can import ({e}); for "
                        f"PostgreSQL: pip install 'fercore[postgres]' (psycopg 3)") from None
    except Exception as e:  # SQLAlchemy's OperationalError and the like: a server not reachable, a wrong password
        first = " ".join(str(e).split())[:300]
        raise UserError(f"optuna_storage: cannot open {redact(url)} ({type(e).__name__}: {redact(first)})") from None


def fail_running(spec: SweepSpec, storage: optuna.storages.BaseStorage | None) -> None:
    """Tell FAIL for the trials a time budget cut off: Ray never completes them, so they are still RUNNING."""
    if storage is None or not spec.time_budget_s:
        return
    study = optuna.load_study(study_name=spec.name, storage=storage)
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        study.tell(t.number, state=optuna.trial.TrialState.FAIL)
