"""What a running sweep shows, and leaves for `fersweep status`: trials running / done / stopped / failed, each
running trial's epoch, elapsed time and an estimate of what remains, and the best validation objective so far with
its config. Validation only: test figures wait for the sweep's final summary (a test figure in a live view invites
choosing by it).

In a terminal the view is live (rich, redrawn about once a second); elsewhere (CI, nohup, a pipe) it is plain lines,
one per trial that starts or ends. Either way the driver writes the same state to progress.json beside the results
(atomically, a few times a minute at most), which `fersweep status` reads from any terminal. No Ray here.
"""
from __future__ import annotations

import json
import math
import os
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, TextIO

from fercore.atomic import atomic_write
from fercore.numbers import finite
from fercore.results.rows import FAILED
from fercore.sections import DESCRIBED

PROGRESS_FILE = "progress.json"
WRITE_EVERY_S = 2.0  # progress.json at most this often (and at every trial's start and end)
MAX_CONFIG_KEYS = 4  # config keys a line shows besides DESCRIBED's


@dataclass
class Running:
    """A trial that has started and is not yet recorded."""
    started: float
    config: dict[str, Any] = field(default_factory=dict)
    epoch: int = 0
    value: float | None = None  # its latest epoch's objective (validation)

    def epochs(self) -> int | None:
        value = self.config.get("classifier.epochs")
        return int(value) if finite(value) else None

    def left_s(self, now: float) -> float | None:
        """Its time left at its pace so far: elapsed / epochs done x epochs to go (unknown before its first epoch)."""
        total = self.epochs()
        if not self.epoch or total is None:
            return None
        return max(0.0, (now - self.started) / self.epoch * (total - self.epoch))


class Progress:
    """The sweep's progress as its driver sees it (fercore.sweep.callback feeds it), shown live or as lines and
    written to FOLDER/progress.json."""

    def __init__(self, folder: Path, name: str, total: int, metric: str, mode: str, phase: str,
                 recorded: Iterable[dict[str, Any]] = (), stream: TextIO | None = None, live: bool | None = None,
                 concurrency: int = 1):
        self.folder, self.name, self.total, self.metric, self.mode, self.phase = \
            Path(folder), name, total, metric, mode, phase
        self.stream = stream or sys.stdout
        self.concurrency = max(1, concurrency)
        self.started = time.time()
        self.running: dict[str, Running] = {}
        self.counts = {"done": 0, "stopped": 0, "failed": 0}
        self.best: dict[str, Any] | None = None
        self.durations: list[float] = []  # of the trials this run finished: the sweep's estimate of what remains
        self.seen: dict[str, set[str]] = {}  # config key -> the values trials had: a line shows the keys that vary
        self._written = 0.0
        self._live = None
        for row in recorded:  # trials recorded before a resume count, and may be the best so far
            self._count(row)
        if live if live is not None else getattr(self.stream, "isatty", lambda: False)():
            from rich.console import Console
            from rich.live import Live

            self._live = Live(self.render(), console=Console(file=self.stream), refresh_per_second=1,
                              transient=True, auto_refresh=True, get_renderable=self.render)
            self._live.start()
        self.write()

    # Events (the results callback's).

    def trial_started(self, trial_id: str) -> None:
        self.running[trial_id] = Running(time.time())
        if self._live is None:
            self._line(f"[start] trial {trial_id} ({self.phase}): {len(self.running)} running")
        self.write(force=True)

    def trial_epoch(self, trial_id: str, epoch: int, value: Any, config: dict[str, Any] | None) -> None:
        run = self.running.setdefault(trial_id, Running(time.time()))
        run.epoch, run.value = int(epoch), float(value) if finite(value) else None
        if config:
            run.config = config
            self._see(config)
        self.write()

    def trial_recorded(self, trial_id: str, row: dict[str, Any]) -> None:
        """A trial's row committed: it leaves the running ones and counts by its status."""
        run = self.running.pop(trial_id, None)
        if run is not None:
            self.durations.append(time.time() - run.started)
        self._count(row)
        done = sum(self.counts.values())
        value = row.get(self.metric)
        shown = f"{self.metric}={value:.3f}" if finite(value) else ""
        where = "; ".join(part for part in (f"at {row['at']}" if row.get("at") else "",
                                           f"full log: {self.folder / row['log']}" if row.get("log") else "") if part)
        self._line(f"[{done}/{self.total}] trial {trial_id} {row.get('status')} {shown} "
                   f"{row.get('reason') or ''}".rstrip() + (f" ({where})" if where else ""))
        self.write(force=True)

    def refresh(self, force: bool = False) -> None:
        """Redraw the live view and write progress.json (at most every WRITE_EVERY_S unless FORCE): the driver's
        loop calls this at every step, so what status reads is at most that old."""
        if self._live is not None and force:
            self._live.refresh()
        self.write(force=force)

    def close(self, ended: str | None) -> None:
        """The sweep's loop is over: ENDED says how (finished, or why it stopped)."""
        if self._live is not None:
            self._live.stop()
            self._live = None
        self.write(force=True, ended=ended)

    # What is shown.

    def _see(self, values: dict[str, Any]) -> None:
        for k, v in values.items():
            if "." in k and not k.startswith("data."):
                self.seen.setdefault(k, set()).add(repr(v))

    def _count(self, row: dict[str, Any]) -> None:
        self._see(row)
        status = row.get("status")
        key = "done" if status == "completed" else "stopped" if status == "stopped" else "failed" \
            if status in FAILED else None
        if key:
            self.counts[key] += 1
        value = row.get(self.metric)
        if status == "completed" and finite(value) and (self.best is None or self._better(value, self.best["value"])):
            self.best = {"trial_id": row.get("trial_id"), "value": float(value),
                         "config": {k: row[k] for k in self._shown_keys(row)}}

    def _better(self, a: float, b: float) -> bool:
        return a > b if self.mode == "max" else a < b

    def _shown_keys(self, row: dict[str, Any]) -> list[str]:
        """DESCRIBED's keys, then up to MAX_CONFIG_KEYS of those whose values differ between the trials seen so far."""
        described = [k for k in DESCRIBED if row.get(k) is not None]
        varying = [k for k in sorted(row) if k not in DESCRIBED and len(self.seen.get(k, ())) > 1
                   and row.get(k) is not None]
        return described + varying[:MAX_CONFIG_KEYS]

    def left_s(self, now: float) -> float | None:
        """The sweep's time left: trials to go at the mean duration of those finished so far, CONCURRENCY at once,
        plus the longest estimate of a running one; None until either is known."""
        to_go = max(0, self.total - sum(self.counts.values()) - len(self.running))
        running = [left for r in self.running.values() if (left := r.left_s(now)) is not None]
        if self.durations:
            mean = sum(self.durations) / len(self.durations)
            return max(running, default=0.0) + math.ceil(to_go / self.concurrency) * mean
        return max(running) if running and not to_go else None

    def state(self, ended: str | None = None) -> dict[str, Any]:
        now = time.time()
        return {"sweep": self.name, "phase": self.phase, "metric": self.metric, "mode": self.mode,
                "total": self.total, "counts": dict(self.counts), "started": self.started, "updated": now,
                "left_s": self.left_s(now), "best": self.best, "ended": ended,
                "driver": {"pid": os.getpid(), "host": socket.gethostname()},
                "running": [{"trial_id": t, "epoch": r.epoch, "epochs": r.epochs(), "value": r.value,
                             "elapsed_s": now - r.started, "left_s": r.left_s(now),
                             "config": {k: r.config[k] for k in self._shown_keys(r.config)}}
                            for t, r in sorted(self.running.items())]}

    def render(self):
        return render_state(self.state())

    def write(self, force: bool = False, ended: str | None = None) -> None:
        now = time.time()
        if not force and now - self._written < WRITE_EVERY_S:
            return
        self._written = now
        data = json.dumps(self.state(ended), default=str, indent=1).encode()
        try:
            atomic_write(self.folder / PROGRESS_FILE, lambda f: f.write(data))
        except OSError:
            pass  # a full disk: the sweep's own guard says so; the view is not worth failing a trial for

    def _line(self, text: str) -> None:
        if self._live is not None:
            self._live.console.print(text, markup=False, highlight=False)
        else:
            print(text, file=self.stream, flush=True)


def mark_ended(folder: Path, ended: str) -> None:
    """Say in FOLDER's progress.json how the sweep ended (its last phase's view wrote the rest)."""
    path = Path(folder) / PROGRESS_FILE
    try:
        state = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return
    state.update(ended=ended, running=[], updated=time.time(), left_s=0.0)
    data = json.dumps(state, default=str, indent=1).encode()
    atomic_write(path, lambda f: f.write(data))


def duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def config_text(config: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in config.items())


def headline(state: dict[str, Any]) -> list[str]:
    """The view's first lines: the counts and time, then the best validation objective so far with its config."""
    counts, total = state["counts"], state["total"]
    running = len(state["running"])
    to_go = max(0, total - sum(counts.values()) - running)
    lines = [f"sweep {state['sweep']!r}, {state['phase']} phase: {running} running, {counts['done']} done, "
             f"{counts['stopped']} stopped, {counts['failed']} failed, {to_go} to go ({total} trials); "
             f"elapsed {duration(state['updated'] - state['started'])}, ~{duration(state['left_s'])} left"]
    best = state.get("best")
    if best:
        lines.append(f"best {state['metric']} so far (validation): {best['value']:.4f}, trial {best['trial_id']}: "
                     f"{config_text(best['config'])}")
    return lines


def render_state(state: dict[str, Any]):
    """STATE (Progress.state, or progress.json as read back) as a rich renderable: the headline and a table of the
    running trials."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    table = Table(show_edge=False, pad_edge=False, box=None, header_style="bold")
    for column in ("trial", "epoch", state["metric"], "elapsed", "left"):  # never cut: the config gives way
        table.add_column(column, no_wrap=True, min_width=len(column))
    table.add_column("config", overflow="ellipsis", no_wrap=True, ratio=1)
    for r in state["running"]:
        epochs = f"{r['epoch']}/{r['epochs']}" if r.get("epochs") else str(r["epoch"])
        value = f"{r['value']:.3f}" if finite(r.get("value")) else "-"
        table.add_row(r["trial_id"], epochs, value, duration(r["elapsed_s"]), duration(r.get("left_s")),
                      config_text(r["config"]))
    return Group(*(Text(line) for line in headline(state)), table)
