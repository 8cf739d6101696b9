"""A `fersweep run` driver killed with SIGKILL once a condition on its results holds (tests of --resume)."""
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable

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
