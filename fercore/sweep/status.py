"""`fersweep status RESULTS`: a running or finished sweep seen from any terminal, without taking its lease or any
lock: the progress view its driver last wrote (progress.json), the trials recorded so far (trials.parquet as its
manifest commits it), and how the sweep ended, or whether its driver is still alive (lease.json's heartbeat).

RESULTS is a sweep's results folder, or the URI of one (s3://bucket/prefix/<name>, file:///...): its manifest,
trials' parts, progress.json and lease.json are read from there. No Ray here.
"""
from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

from fercore.errors import UserError
from fercore.numbers import finite
from fercore.redact import redact
from fercore.results import TRIALS, read_table
from fercore.results.manifest import MANIFEST, read_manifest
from fercore.sweep.lease import LEASE, TIMEOUT_S
from fercore.sweep.progress import PROGRESS_FILE, config_text, duration, headline
from fercore.sweep.storage import is_uri

SHOWN_TRIALS = 20  # the last trials recorded, listed


def sweep_status(results: str) -> list[str]:
    """The lines `fersweep status RESULTS` prints."""
    if is_uri(results):
        with tempfile.TemporaryDirectory() as scratch:
            _fetch(results, Path(scratch))
            return _lines(Path(scratch), redact(results))
    folder = Path(results)
    if not folder.is_dir():
        raise UserError(f"{folder}: no such folder; expected a sweep's results folder (e.g. results/quickstart)")
    return _lines(folder, str(folder))


def _lines(folder: Path, where: str) -> list[str]:
    state = _read_json(folder / PROGRESS_FILE)
    table = read_table(folder, TRIALS)
    rows = table.to_pylist() if table is not None else []
    if state is None and not rows:
        raise UserError(f"{where}: neither {PROGRESS_FILE} nor {TRIALS}: not a sweep's results folder, or its sweep "
                        f"has not started")
    lines = [f"Sweep results: {where}"]
    if state is not None:
        lines += headline(state)
        if state["running"]:
            lines.append(f"running ({len(state['running'])}, as of {duration(time.time() - state['updated'])} ago):")
            for r in state["running"]:
                epochs = f"{r['epoch']}/{r['epochs']}" if r.get("epochs") else str(r["epoch"])
                value = f"{state['metric']}={r['value']:.3f}" if finite(r.get("value")) else "-"
                lines.append(f"  trial {r['trial_id']}: epoch {epochs}, {value}, elapsed {duration(r['elapsed_s'])}, "
                             f"~{duration(r.get('left_s'))} left; {config_text(r['config'])}")
    metric = state["metric"] if state else "val_macro_f1"
    lines.append(f"{len(rows)} trial{'s' if len(rows) != 1 else ''} recorded"
                 + (f"; the last {SHOWN_TRIALS}:" if len(rows) > SHOWN_TRIALS else ":" if rows else ""))
    for r in rows[-SHOWN_TRIALS:]:
        value = f"{metric}={r[metric]:.3f}" if finite(r.get(metric)) else ""
        lines.append(f"  trial {r['trial_id']} ({r.get('phase') or 'search'}): {r.get('status')} {value}".rstrip())
    lines.append(_ended(folder, state))
    return lines


def _ended(folder: Path, state: dict[str, Any] | None) -> str:
    """How the sweep ended, or that its driver is running, or that it stopped without ending."""
    if state is not None and state.get("ended"):
        return f"Ended: {state['ended']}."
    lease = _read_json(folder / LEASE)
    if lease is not None:
        age = time.time() - float(lease.get("heartbeat", 0))
        if age <= TIMEOUT_S:
            return (f"Running: its driver (pid {lease.get('pid', '?')} on {lease.get('host', '?')}) renewed its lease "
                    f"{age:.0f} s ago.")
        return (f"Not running: its driver's lease was last renewed {duration(age)} ago; `fersweep run <sweep> "
                f"--resume` with the same --storage finishes it.")
    return ("Not running and not ended: its driver stopped without ending it (killed?); `fersweep run <sweep> "
            "--resume` with the same --storage finishes it.")


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except ValueError:
        return None  # torn: a driver writes it atomically, so only a foreign file reads so
    return data if isinstance(data, dict) else None


def _fetch(uri: str, into: Path) -> None:
    """What status reads of the sweep at URI, copied into INTO: progress.json, lease.json, the manifest and the
    trials' parts it names."""
    try:
        fs, base = pafs.FileSystem.from_uri(uri)
    except (ValueError, OSError) as e:
        raise UserError(f"{redact(uri)}: cannot open it ({e}); expected a sweep's results folder or its URI") from None
    base = base.rstrip("/")

    def get(rel: str) -> bool:
        target = into / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            with fs.open_input_stream(f"{base}/{rel}") as f:
                target.write_bytes(f.read())
            return True
        except (FileNotFoundError, OSError):
            return False

    for name in (PROGRESS_FILE, LEASE):
        get(name)
    if get(MANIFEST):
        manifest = read_manifest(into)
        for part in manifest.tables.get(TRIALS, []) if manifest is not None else []:
            get(f"{TRIALS}/{part}")
