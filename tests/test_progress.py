"""A sweep a person can watch (issue 25 items 2 and 3): the driver's progress view, live in a terminal and plain
lines elsewhere, shows validation figures only; progress.json beside the results lets `fersweep status` show the
same from any terminal, with how the sweep ended or whether its driver is alive."""
import io
import json
import time

import pytest

from fercore.cli import main
from fercore.results import ResultsStore
from fercore.sweep.progress import PROGRESS_FILE, Progress, mark_ended

ROWS = [{"trial_id": "a1", "status": "completed", "val_macro_f1": 0.41, "test_macro_f1": 0.99,
         "classifier.backbone": "cnn3", "classifier.lr": 0.01, "augment.policy": "none", "reason": ""},
        {"trial_id": "b2", "status": "completed", "val_macro_f1": 0.52, "test_macro_f1": 0.11,
         "classifier.backbone": "cnn3", "classifier.lr": 0.002, "augment.policy": "none", "reason": ""},
        {"trial_id": "c3", "status": "stopped", "val_macro_f1": 0.60, "test_macro_f1": None,
         "classifier.backbone": "cnn3", "classifier.lr": 0.03, "augment.policy": "none",
         "reason": "stopped early by the scheduler after epoch 1"},
        {"trial_id": "d4", "status": "error", "val_macro_f1": None, "classifier.backbone": "cnn3",
         "classifier.lr": 0.5, "augment.policy": "none", "reason": "ValueError: boom"}]


class Terminal(io.StringIO):
    def isatty(self):
        return True


def sweep(folder, stream, live=None):
    progress = Progress(folder, "watched", 6, "val_macro_f1", "max", "search", stream=stream, live=live,
                        concurrency=2)
    for row in ROWS:
        progress.trial_started(row["trial_id"])
        progress.trial_epoch(row["trial_id"], 1, 0.3, {"classifier.epochs": 4, **{k: v for k, v in row.items()
                                                                                    if "." in k}})
        progress.trial_recorded(row["trial_id"], row)
    progress.trial_started("e5")
    progress.trial_epoch("e5", 2, 0.37, {"classifier.epochs": 4, "classifier.backbone": "cnn3",
                                         "classifier.lr": 0.004, "augment.policy": "none"})
    progress.refresh(force=True)  # what the driver's loop does within WRITE_EVERY_S
    return progress


def test_plain_lines_and_progress_json_show_validation_only(tmp_path):
    out = io.StringIO()
    progress = sweep(tmp_path, out, live=False)
    text = out.getvalue()
    assert "[start] trial a1 (search)" in text and "[4/6] trial d4 error  ValueError: boom" in text
    assert "[2/6] trial b2 completed val_macro_f1=0.520" in text
    assert "test" not in text, "no test figure while the sweep runs"
    state = json.loads((tmp_path / PROGRESS_FILE).read_text())
    assert state["counts"] == {"done": 2, "stopped": 1, "failed": 1}
    # The best so far is by validation among completed trials (c3 validated higher but was stopped).
    assert state["best"]["trial_id"] == "b2" and state["best"]["value"] == 0.52
    assert state["best"]["config"] == {"classifier.backbone": "cnn3", "augment.policy": "none",
                                       "classifier.lr": 0.002}, "the keys that vary, besides the described ones"
    [running] = state["running"]
    assert (running["trial_id"], running["epoch"], running["epochs"], running["value"]) == ("e5", 2, 4, 0.37)
    assert running["left_s"] == pytest.approx(running["elapsed_s"], abs=0.5), "2 of 4 epochs: as long again"
    assert state["left_s"] is not None and state["ended"] is None
    assert "test" not in json.dumps(state)
    progress.close(None)


def test_a_terminal_gets_a_live_view_that_ends_with_the_loop(tmp_path, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    term = Terminal()
    progress = sweep(tmp_path, term)
    assert progress._live is not None
    progress.close(None)
    shown = term.getvalue()
    assert "best val_macro_f1 so far (validation): 0.5200, trial b2" in shown and "e5" in shown
    assert "\x1b[" in shown, "drawn in place (the view is transient: gone once the loop ends)"
    assert "[2/6] trial b2 completed" in shown and "test" not in shown


def test_status_reads_a_sweep_from_another_terminal_without_its_lease(tmp_path, capsys):
    folder = tmp_path / "watched"
    store = ResultsStore(folder)
    for row in ROWS:
        store.add_trial(row)
    store.flush()
    sweep(folder, io.StringIO(), live=False)
    lease = {"token": "x", "host": "node-7", "pid": 4242, "started": time.time(), "heartbeat": time.time()}
    (folder / "lease.json").write_text(json.dumps(lease))

    def status() -> str:
        assert main(["status", str(folder)]) == 0
        return capsys.readouterr().out

    text = status()
    assert "1 running, 2 done, 1 stopped, 1 failed, 1 to go (6 trials)" in text
    assert "trial e5: epoch 2/4, val_macro_f1=0.370" in text and "4 trials recorded" in text
    assert "Running: its driver (pid 4242 on node-7)" in text and "test_" not in text.replace(str(tmp_path), "")
    assert json.loads((folder / "lease.json").read_text()) == lease, "status takes nothing"
    (folder / "lease.json").write_text(json.dumps({**lease, "heartbeat": time.time() - 3600}))
    assert "Not running: its driver's lease was last renewed 1h00m ago" in status()
    mark_ended(folder, "finished in 12 s")
    text = status()
    assert "Ended: finished in 12 s." in text and "0 running" in text
    # The same through a URI (file://), as for a sweep whose results live in a bucket.
    assert main(["status", folder.as_uri()]) == 0
    assert "Ended: finished in 12 s." in capsys.readouterr().out
    assert main(["status", str(tmp_path / "nothing")]) == 2
    assert "no such folder" in capsys.readouterr().err
