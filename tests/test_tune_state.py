"""tune_state: Ray Tune's state files kept whole in one zip, put back over a half-written copy before a resume, and
a half-written copy without a zip refused with the file's name (Ray would silently start the sweep over)."""
import io
import json
import zipfile

import pytest

from fercore.errors import UserError
from fercore.sweep import state as tune_state

SESSION = "2026-11-23_10-00-00"


def staging_folder(path, session=SESSION, trials=3):
    """What Ray 2.60's driver staging folder holds between two steps: its three state files, a temporary file of
    an atomic save in progress, and a folder per trial."""
    path.mkdir(parents=True, exist_ok=True)
    state = {"trial_data": [[json.dumps({"trial_id": f"t{i}"}), "{}"] for i in range(trials)], "runner_data": {}}
    (path / f"experiment_state-{session}.json").write_text(json.dumps(state))
    (path / f"search_gen_state-{session}.json").write_bytes(b"\x80searcher counter")
    (path / f"searcher-state-{session}.pkl").write_bytes(b"\x80optuna search")
    (path / f"tmp-search_gen_state-{session}.json").write_bytes(b"half")
    (path / "trial_t0").mkdir()
    return path


def test_a_snapshot_keeps_the_three_state_files_and_nothing_else(tmp_path):
    staging = staging_folder(tmp_path / "staging")
    data = tune_state.snapshot(staging)
    assert data is not None
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        assert sorted(z.namelist()) == sorted(f"{p}-{SESSION}.{e}" for p, e in
                                              [("experiment_state", "json"), ("search_gen_state", "json"),
                                               ("searcher-state", "pkl")])
        assert z.read(f"searcher-state-{SESSION}.pkl") == b"\x80optuna search"
    assert [p.name for p in tmp_path.iterdir()] == ["staging"], "a snapshot writes nothing"


def test_no_snapshot_before_ray_saved_an_experiment_state(tmp_path):
    (tmp_path / "staging").mkdir()
    assert tune_state.snapshot(tmp_path / "staging") is None
    assert tune_state.snapshot(tmp_path / "missing") is None
    assert [p.name for p in tmp_path.iterdir()] == ["staging"]


def test_restore_replaces_a_half_written_copy_and_drops_other_sessions_state(tmp_path):
    staging = staging_folder(tmp_path / "staging")
    (tmp_path / "tune_state.zip").write_bytes(tune_state.snapshot(staging))  # as a commit attaches it
    tune = tmp_path / "tune"
    tune.mkdir()
    whole = (staging / f"experiment_state-{SESSION}.json").read_bytes()
    (tune / f"experiment_state-{SESSION}.json").write_bytes(whole[: len(whole) // 2])  # a kill during Ray's copy
    with pytest.raises(UserError, match=f"experiment_state-{SESSION}.json is not whole JSON"):
        tune_state.check(tune)
    (tune / "experiment_state-2026-11-23_11-00-00.json").write_text("{}")  # a later session the zip does not know
    (tune / "tuner.pkl").write_bytes(b"tuner")
    assert tune_state.restore(tmp_path / "tune_state.zip", tune)
    assert (tune / f"experiment_state-{SESSION}.json").read_bytes() == whole
    assert not (tune / "experiment_state-2026-11-23_11-00-00.json").exists()
    assert (tune / "tuner.pkl").read_bytes() == b"tuner"  # Ray's other files are left as they are
    tune_state.check(tune)


def test_restore_without_a_snapshot_changes_nothing(tmp_path):
    tune = staging_folder(tmp_path / "tune")
    before = {p.name: p.read_bytes() for p in tune.iterdir() if p.is_file()}
    assert not tune_state.restore(tmp_path / "tune_state.zip", tune)
    assert {p.name: p.read_bytes() for p in tune.iterdir() if p.is_file()} == before


@pytest.mark.parametrize("name", ["../experiment_state-x.json", "tuner.pkl", "sub/searcher-state-x.pkl"])
def test_restore_refuses_a_zip_with_other_files_naming_the_zip(tmp_path, name):
    with zipfile.ZipFile(tmp_path / "tune_state.zip", "w") as z:
        z.writestr(name, b"x")
    with pytest.raises(UserError, match=r"tune_state\.zip holds"):
        tune_state.restore(tmp_path / "tune_state.zip", tmp_path / "tune")
    assert not (tmp_path / "experiment_state-x.json").exists()


def test_a_damaged_zip_or_a_missing_state_is_one_clear_error(tmp_path):
    (tmp_path / "tune_state.zip").write_bytes(b"PK\x03\x04 cut short")
    with pytest.raises(UserError, match=r"tune_state\.zip is not a readable zip"):
        tune_state.restore(tmp_path / "tune_state.zip", tmp_path / "tune")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="holds no experiment_state"):
        tune_state.check(tmp_path / "empty")
