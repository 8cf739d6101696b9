"""Copy warnings where people look (issue 16): `fersweep trial` on a data set whose train split holds copies of test
and validation images prints each count; the sweep summary and the report's first lines say so for the data set's
own splits and for synthetic copies of test or validation images, with the counts; a clean set warns of nothing."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fercore.cli import leak_warnings, main
from fercore.data.faceset import SPLIT_INDEX, make_faceset
from fercore.metrics.alterations import ALTERATIONS
from fercore.report.outcomes import header
from fercore.report.render import Heading, Paragraph
from fercore.report.tables import Results
from fercore.sweep.summary import leak_lines
from tests.conftest import TINY_TRIAL

CLEAN = {"leak_real_test": 0, "leak_real_val": 0, "leak_synthetic_test": 0, "leak_synthetic_val": 0}


def leaky_faces(faces):
    """FACES with 3 training images replaced by flipped, shifted copies of test images and 2 by darker copies of
    validation images: a data set whose own splits share near-copies."""
    images = faces.images.copy()
    train_at, test_at, val_at = (np.flatnonzero(faces.splits == SPLIT_INDEX[s]) for s in ("train", "test", "val"))
    images[train_at[:3]] = ALTERATIONS["flip_shift_1"](images[test_at[:3]])
    images[train_at[3:5]] = ALTERATIONS["brightness_-15"](images[val_at[:2]])
    return make_faceset(images, faces.labels, faces.splits, "leaky")


@pytest.mark.slow
@pytest.mark.usefixtures("one_torch_thread")
def test_trial_command_warns_of_the_data_sets_own_cross_split_copies(tiny_faces, monkeypatch, capsys):
    """A real-only trial keeps every training image: the audit counts the planted copies, the command prints them."""
    import fercore.data

    args = [f"{k}={v}" for k, v in TINY_TRIAL.items()] + ["classifier.epochs=1", "augment.policy=none"]
    monkeypatch.setattr(fercore.data, "load", lambda *a, **k: leaky_faces(tiny_faces))
    assert main(["trial", *args]) == 0
    out = capsys.readouterr().out.splitlines()
    warnings = [line for line in out if line.startswith("warning:")]
    assert len(warnings) == 2, warnings
    assert warnings[0].startswith("warning: 3 of this trial's real training images nearly copy a test image")
    assert warnings[1].startswith("warning: 2 of this trial's real training images nearly copy a validation image")
    assert out[-1].startswith("{")  # the JSON line stays last

    monkeypatch.setattr(fercore.data, "load", lambda *a, **k: tiny_faces)
    assert main(["trial", *args]) == 0
    assert "warning" not in capsys.readouterr().out


def test_trial_warnings_name_each_nonzero_count():
    assert leak_warnings({**CLEAN, "leak_synthetic_val": float("nan")}) == []
    lines = leak_warnings({**CLEAN, "leak_synthetic_test": 4, "leak_synthetic_val": 1})
    assert [line.split(" nearly")[0] for line in lines] == \
        ["warning: 4 synthetic training images", "warning: 1 synthetic training images"]
    assert "a test image" in lines[0] and "a validation image" in lines[1]


def rows(*changes):
    return [{"trial_id": f"t{i}", "status": "completed", **CLEAN, **c} for i, c in enumerate(changes)]


def test_sweep_summary_warns_of_own_split_copies_and_synthetic_copies():
    assert leak_lines(rows({}, {})) == []
    assert leak_lines([{"trial_id": "t0", "status": "error"}]) == []  # a failed trial has no audit
    own, synthetic = leak_lines(rows({"leak_real_test": 3, "leak_real_val": 2}, {"leak_real_test": 1},
                                     {"leak_synthetic_test": 5}, {"leak_synthetic_val": 2}))
    assert "own splits share near-copies" in own
    assert "up to 3 real training images copy a test image and 2 real training images copy a validation image" in own
    assert "1 trial with up to 5 copying a test image; 1 trial with up to 2 copying a validation image" in synthetic
    (only_val,) = leak_lines(rows({"leak_synthetic_val": 1}, {"leak_synthetic_val": 3}))
    assert "2 trials with up to 3 copying a validation image" in only_val and "a test image" not in only_val


def first_lines(trials: list[dict]) -> list[str]:
    """The report header's paragraphs before its title."""
    blocks = header(Results(Path("sweep"), pd.DataFrame(trials)))
    title = next(i for i, b in enumerate(blocks) if isinstance(b, Heading))
    return [b.text for b in blocks[:title] if isinstance(b, Paragraph)]


def test_report_header_warns_for_validation_and_the_data_sets_own_splits():
    assert first_lines(rows({}, {})) == []
    test, val, own = first_lines(rows({"leak_synthetic_test": 2, "leak_synthetic_val": 4, "leak_real_test": 3},
                                      {"leak_real_val": 1}))
    assert test.startswith("WARNING: 2 synthetic training images nearly copy a test image")
    assert val.startswith("WARNING: 4 synthetic training images nearly copy a validation image") and "t0 (4)" in val
    assert own.startswith("WARNING: the data set's own splits share near-copies")
    assert "up to 3 real training images nearly copy a test image and up to 1 real training image nearly copy a " \
           "validation image" in own
