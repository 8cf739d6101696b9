"""Ray Tune's experiment state kept whole for `--resume`, as one zip committed together with the rows (an attachment
of the results manifest, fercore.results.manifest).

Why Ray's own copy is not enough: Ray 2.60 saves its state (experiment_state-*.json with the trials,
search_gen_state-*.json and searcher-state-*.pkl with the searcher) into a staging folder on the driver and copies
that folder into the results folder's tune/ from a thread of its own, writing each file in place. A driver killed
during that copy leaves a truncated experiment_state there, or one from another save than the searcher's; Ray then
fails to restore, logs it, and silently starts a new experiment of one trial (TuneController.__init__), so a resumed
sweep "finishes" without running the trials it was missing. The staging folder itself is consistent between two
steps of Ray's loop (the save runs in the loop's thread), so a callback copies it from there, and `--resume` puts
that copy back into tune/ before Ray reads it. The file names are Ray's own (fercore.sweep.internals lists them
with the other Ray internals this layer relies on).

Why with the rows: a resumed sweep is right only if the state it restores knows every trial that has a row (one it
does not know is sampled again: a trial too many) and has a row for every trial it holds as finished (or that trial
is lost). Ray saves at its own pace (at least 10 s apart), so the results callback stages finished trials' rows and
commits them, with a snapshot of the state Ray has just saved, in one manifest: both hold or neither does."""
from __future__ import annotations

import fnmatch
import io
import json
import os
import zipfile
from pathlib import Path

from fercore.atomic import atomic_write
from fercore.errors import UserError
from fercore.results.manifest import read_manifest
from fercore.results.rows import SEARCH

TUNE_STATE = "tune_state.zip"  # where folders from before snapshots were committed with the rows kept theirs
ATTACHMENT = "tune_state"  # the results manifest's attachment that names the snapshot committed with the rows
# The files Ray restores from (TuneController.resume, SearchGenerator.restore_from_dir), one of each per session.
STATE_PATTERNS = ("experiment_state-*.json", "search_gen_state-*.json", "searcher-state-*.pkl")
EXPERIMENT_STATE = STATE_PATTERNS[0]


def _is_state_file(name: str) -> bool:
    return any(fnmatch.fnmatch(name, pattern) for pattern in STATE_PATTERNS)


def _state_files(staging: Path) -> list[Path]:
    # By name only: the staging folder also holds a folder per trial, and a stat of each (thousands) per look made
    # the driver's cost per trial grow with the sweep.
    return sorted(p for pattern in STATE_PATTERNS for p in staging.glob(pattern)) if staging.is_dir() else []


def experiment_state_file(staging: str | Path) -> Path | None:
    """The experiment state file in Ray's driver staging folder STAGING (one name per Ray session), None before
    Ray's first save."""
    states = sorted(Path(staging).glob(EXPERIMENT_STATE)) if Path(staging).is_dir() else []
    return states[-1] if states else None


def stamp(state_file: Path) -> tuple[int, int] | None:
    """(size, mtime) of Ray's experiment state file STATE_FILE (experiment_state_file): it changes when Ray saves its
    state, which Ray does at most every TUNE_GLOBAL_CHECKPOINT_S (by default at least 10 s apart, and so that saving
    takes at most a twentieth of the time). One stat, whatever the sweep's size."""
    try:
        st = os.stat(state_file)
    except FileNotFoundError:
        return None
    return st.st_size, st.st_mtime_ns


def snapshot(staging: str | Path) -> bytes | None:
    """Ray's state files in its driver staging folder STAGING as one zip's bytes; None when STAGING holds no
    experiment state yet."""
    files = _state_files(Path(staging))
    if not any(fnmatch.fnmatch(p.name, EXPERIMENT_STATE) for p in files):
        return None
    buffer = io.BytesIO()
    # Level 1: half the time of the default level for twice the size.
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        for p in files:
            z.writestr(p.name, p.read_bytes())
    return buffer.getvalue()


def attachment(phase: str = SEARCH) -> str:
    """The manifest attachment of the snapshot of PHASE's Ray Tune run (the confirmation phase has a run of its
    own: fercore.sweep.confirm)."""
    return ATTACHMENT if phase == SEARCH else f"{ATTACHMENT}_{phase}"


def committed(folder: str | Path, phase: str = SEARCH) -> Path | None:
    """The snapshot of PHASE's Ray Tune run committed with the results of the sweep folder FOLDER (the manifest's
    attachment), or, in a folder from before snapshots were committed with the rows, its tune_state.zip; None when
    it has neither."""
    manifest = read_manifest(folder)
    path = manifest.attachment(folder, attachment(phase)) if manifest is not None else None
    if path is None and phase == SEARCH and (Path(folder) / TUNE_STATE).exists():
        path = Path(folder) / TUNE_STATE
    return path


def restore(snapshot: str | Path, tune_dir: str | Path) -> bool:
    """Replace the state files in TUNE_DIR (Ray's copy, possibly half written or newer than the rows) by the
    snapshot's; False when there is no snapshot file (nothing committed yet). Names are checked: only Ray's state
    files, no path."""
    snapshot, tune_dir = Path(snapshot), Path(tune_dir)
    if not snapshot.exists():
        return False
    try:
        with zipfile.ZipFile(snapshot) as z:
            contents = {name: z.read(name) for name in z.namelist()}
    except (zipfile.BadZipFile, OSError) as e:
        raise UserError(f"--resume: {snapshot} is not a readable zip of Ray Tune's state ({e}); run without "
                        f"--resume to start the sweep over") from None
    unexpected = [n for n in contents if "/" in n or "\\" in n or not _is_state_file(n)]
    if unexpected:
        raise UserError(f"--resume: {snapshot} holds {unexpected[0]!r}; expected only Ray Tune's state files "
                        f"({', '.join(STATE_PATTERNS)})")
    tune_dir.mkdir(parents=True, exist_ok=True)
    for old in tune_dir.iterdir():  # another session's files would be read instead, if newer
        if old.is_file() and _is_state_file(old.name) and old.name not in contents:
            old.unlink()
    for name, data in contents.items():
        atomic_write(tune_dir / name, lambda f, data=data: f.write(data))
    return True


def check(tune_dir: str | Path) -> None:
    """Fail with the file's name unless TUNE_DIR's newest experiment state is whole JSON: Ray would otherwise start
    the sweep over as a new experiment of one trial, and say so only in its log."""
    tune_dir = Path(tune_dir)
    states = sorted(tune_dir.glob(EXPERIMENT_STATE))
    if not states:
        raise UserError(f"--resume: {tune_dir} holds no {EXPERIMENT_STATE} (the driver stopped before Ray saved "
                        f"any trial); run without --resume to start the sweep")
    newest = states[-1]  # named by the session's start time, as Ray picks it
    try:
        json.loads(newest.read_bytes())
    except ValueError as e:
        raise UserError(f"--resume: {newest} is not whole JSON ({e}); the driver was killed while Ray wrote it "
                        f"and no {TUNE_STATE} was saved beside the tables; run without --resume to start over") \
            from None
