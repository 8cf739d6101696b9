"""Ray Tune's experiment state kept whole for `--resume`, in one file written atomically (tune_state.zip beside the
tables).

Why Ray's own copy is not enough: Ray 2.60 saves its state (experiment_state-*.json with the trials,
search_gen_state-*.json and searcher-state-*.pkl with the searcher) into a staging folder on the driver and copies
that folder into the results folder's tune/ from a thread of its own, writing each file in place. A driver killed
during that copy leaves a truncated experiment_state there, or one from another save than the searcher's; Ray then
fails to restore, logs it, and silently starts a new experiment of one trial (TuneController.__init__), so a resumed
sweep "finishes" without running the trials it was missing. The staging folder itself is consistent between two
steps of Ray's loop (the save runs in the loop's thread), so a callback copies it from there, and `--resume` puts
that copy back into tune/ before Ray reads it. The file names are Ray's own (fercore.sweep.internals lists them
with the other Ray internals this layer relies on)."""
from __future__ import annotations

import fnmatch
import json
import zipfile
from pathlib import Path

from fercore.atomic import atomic_write
from fercore.errors import UserError

TUNE_STATE = "tune_state.zip"
# The files Ray restores from (TuneController.resume, SearchGenerator.restore_from_dir), one of each per session.
STATE_PATTERNS = ("experiment_state-*.json", "search_gen_state-*.json", "searcher-state-*.pkl")
EXPERIMENT_STATE = STATE_PATTERNS[0]


def _is_state_file(name: str) -> bool:
    return any(fnmatch.fnmatch(name, pattern) for pattern in STATE_PATTERNS)


def save(staging: str | Path, dest: str | Path) -> bool:
    """Copy Ray's state files from its driver staging folder STAGING into the zip DEST, atomically; False when
    STAGING holds no experiment state yet (nothing is written then)."""
    staging = Path(staging)
    files = sorted(p for p in staging.glob("*") if p.is_file() and _is_state_file(p.name)) if staging.is_dir() else []
    if not any(fnmatch.fnmatch(p.name, EXPERIMENT_STATE) for p in files):
        return False
    contents = {p.name: p.read_bytes() for p in files}

    def write(f) -> None:
        # Level 1: half the time of the default level for twice the size (a 200-trial state zips to 190 KB; 9 ms
        # per trial over that sweep, benchmarks/sweep_overhead.py measures the whole layer).
        with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as z:
            for name, data in contents.items():
                z.writestr(name, data)

    atomic_write(dest, write)
    return True


def restore(snapshot: str | Path, tune_dir: str | Path) -> bool:
    """Replace the state files in TUNE_DIR (Ray's copy, possibly half written) by the snapshot's; False when there is
    no snapshot (a sweep killed before its first trial started). Names are checked: only Ray's state files, no path."""
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
