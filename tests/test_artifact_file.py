"""A trial's artifact file (fercore.results.artifact_file): what the worker encodes comes back equal on the driver,
arrays and bytes included, without unpickling; a damaged file is named in the error."""
import numpy as np
import pytest

from fercore.errors import UserError
from fercore.results import artifact_file


def test_artifacts_come_back_as_they_went(tmp_path):
    rng = np.random.default_rng(0)
    artifacts = {
        "row": {"trial_id": "t1", "val_macro_f1": np.float32(0.25), "test_accuracy": 0.5, "note": None,
                "status": "completed", "nan": float("nan")},
        "classes": ["angry", "happy"], "confusion": [[3, 1], [0, 4]],
        "samples_png": b"\x89PNG\r\n\x1a\n fake",
        "embedding": {"x": rng.normal(size=5), "label": np.arange(5)},
        "predictions": {"index": np.arange(4), "proba": rng.dirichlet(np.ones(2), 4).astype(np.float32),
                        "paired": {"baseline": {"predicted": np.array([0, 1, 1, 0])}}},
        "epoch_values": {"val_macro_f1": 0.2}}
    back = artifact_file.decode(artifact_file.encode(artifacts), "t1.npz")
    assert back["row"]["val_macro_f1"] == pytest.approx(0.25) and back["row"]["note"] is None
    assert np.isnan(back["row"]["nan"]) and back["row"]["status"] == "completed"
    assert back["classes"] == ["angry", "happy"] and back["confusion"] == [[3, 1], [0, 4]]
    assert back["samples_png"] == artifacts["samples_png"]
    np.testing.assert_array_equal(back["embedding"]["x"], artifacts["embedding"]["x"])
    np.testing.assert_array_equal(back["predictions"]["proba"], artifacts["predictions"]["proba"])
    assert back["predictions"]["proba"].dtype == np.float32
    np.testing.assert_array_equal(back["predictions"]["paired"]["baseline"]["predicted"], [0, 1, 1, 0])
    assert back["epoch_values"] == {"val_macro_f1": 0.2}
    path = tmp_path / "t1.npz"
    path.write_bytes(artifact_file.encode(artifacts))
    json_part = artifact_file.decode(path, str(path), arrays=False)  # what the driver holds until the commit
    assert json_part["row"] == back["row"] and json_part["confusion"] == [[3, 1], [0, 4]]
    assert json_part["samples_png"] is None and json_part["predictions"]["proba"] is None
    assert json_part["embedding"] == {"x": None, "label": None}


def test_a_damaged_or_pickled_file_is_refused_by_name(tmp_path):
    with pytest.raises(UserError, match=r"incoming/t2\.npz: not a trial's artifact file"):
        artifact_file.decode(b"PK\x03\x04 cut short", "incoming/t2.npz")
    path = tmp_path / "pickled.npz"
    np.savez(path, __meta__=np.frombuffer(b"{}", dtype=np.uint8), evil=np.array([object()], dtype=object))
    with pytest.raises(UserError, match="pickled.npz: not a trial's artifact file"):
        artifact_file.decode(path.read_bytes(), str(path))


def test_keys_that_would_not_come_back_are_refused():
    with pytest.raises(ValueError, match="key 'a/b'"):
        artifact_file.encode({"a/b": 1})
    with pytest.raises(TypeError, match="set is not JSON"):
        artifact_file.encode({"row": {"x": {1, 2}}})
