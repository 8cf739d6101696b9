"""A `fersweep run` driver killed with SIGKILL once a condition on its results holds (tests of --resume), and the
small sweep those tests kill."""
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Callable

import yaml

from fercore.results import read_table

# Its own local Ray instance, not one a test left running. Ray saves its state every 2 s or more (not its 10 s,
# which short trials would outlast: every row would be committed at the sweep's end).
ENV = {**os.environ, "RAY_ADDRESS": "", "TUNE_GLOBAL_CHECKPOINT_S": "2"}


def kill_when(command: list[str], cwd: Path, ready: Callable[[], bool], what: str, timeout_s: float = 300,
              poll_s: float = 0.5) -> None:
    """Run COMMAND in CWD and SIGKILL it, with the local Ray processes of its session, once READY() holds (WHAT:
    what READY waits for, for the failure message); fail if the command ends first or READY never holds."""
    driver = subprocess.Popen(command, cwd=cwd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    try:
        deadline = time.monotonic() + timeout_s
        while not ready():
            assert driver.poll() is None, f"the sweep ended before it could be killed (waiting for {what})"
            assert time.monotonic() < deadline, f"no {what} within {timeout_s:.0f} s"
            time.sleep(poll_s)
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    finally:
        # The driver's local Ray processes share its session; a killed driver leaves them to be stopped.
        try:
            os.killpg(driver.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def write_lr_sweep(tmp_path: Path, name: str, lr_high: float, epochs: int, **keys: Any) -> Path:
    """TMP_PATH/sweeps/NAME.yaml: a real-only cnn3 of width 8 on the procedural set at scale 0.01, EPOCHS epochs,
    over search_spaces/lr.py (classifier.lr from 1e-3 to LR_HIGH, log), with the sweep keys KEYS."""
    (tmp_path / "search_spaces").mkdir()
    (tmp_path / "search_spaces" / "lr.py").write_text(
        f"def space(trial):\n    trial.suggest_float('classifier.lr', 1e-3, {lr_high!r}, log=True)\n")
    (tmp_path / "sweeps").mkdir()
    sweep = {"name": name, "data": {"source": "procedural", "scale": 0.01}, "space": "lr",
             "fixed": {"augment.policy": "none", "classifier.backbone": "cnn3", "classifier.width": 8,
                       "classifier.epochs": epochs, "classifier.batch_size": 32}, **keys}
    path = tmp_path / "sweeps" / f"{name}.yaml"
    path.write_text(yaml.safe_dump(sweep))
    return path


def committed_rows(out: Path) -> list[dict]:
    """trials.parquet's committed rows, read through the manifest while the sweep runs ([] before its first)."""
    table = read_table(out, "trials.parquet") if out.is_dir() else None
    return table.to_pylist() if table is not None else []
