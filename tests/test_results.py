import numpy as np
import pyarrow.parquet as pq
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import metadata as hp_metadata

from fercore.results import ResultsStore, TensorBoardWriter
from fercore.trial import grid_png


def test_store_writes_parquet_and_keeps_each_trial_once(tmp_path):
    store = ResultsStore(tmp_path)
    store.add_trial({"trial_id": "a", "classifier.backbone": "cnn3", "test_accuracy": 0.5, "status": "completed"})
    store.add_trial({"trial_id": "b", "classifier.backbone": "resnet18", "classifier.small_stem": True,
                     "status": "error", "reason": "boom"})
    store.add_epoch("a", {"epoch": 1, "val_macro_f1": 0.1})
    store.add_epoch("a", {"epoch": 2, "val_macro_f1": 0.2})
    store.flush()
    # The same trial again (a resumed driver replaying it) replaces its row instead of adding one.
    again = ResultsStore(tmp_path)
    again.add_trial({"trial_id": "a", "classifier.backbone": "cnn3", "test_accuracy": 0.5, "status": "completed"})
    again.add_epoch("a", {"epoch": 2, "val_macro_f1": 0.2})
    again.flush()
    trials = pq.read_table(tmp_path / "trials.parquet").to_pylist()
    assert sorted(r["trial_id"] for r in trials) == ["a", "b"]
    by_id = {r["trial_id"]: r for r in trials}
    assert by_id["b"]["classifier.small_stem"] is True and by_id["a"]["classifier.small_stem"] is None
    assert by_id["b"]["test_accuracy"] is None and by_id["b"]["reason"] == "boom"
    epochs = pq.read_table(tmp_path / "epochs.parquet").to_pylist()
    assert [(r["trial_id"], r["epoch"]) for r in epochs] == [("a", 1), ("a", 2)]
    assert not list(tmp_path.glob("*.tmp"))


def test_tensorboard_events_read_back_by_tensorboard(tmp_path):
    tb = TensorBoardWriter(tmp_path)
    for epoch in (1, 2):
        tb.epoch("t1", epoch, {"epoch": epoch, "train_loss": 1.0 / epoch, "val_macro_f1": 0.1 * epoch})
    grid = grid_png(np.random.default_rng(0).integers(0, 255, (7, 8, 48, 48), dtype=np.uint8))
    confusion = np.eye(7, dtype=int) * 3
    tb.finish("t1", {"classifier.backbone": "cnn3", "classifier.lr": 0.001},
              {"epoch": 2, "val_macro_f1": 0.2, "test_macro_f1": 0.3}, {"samples_png": grid, "confusion": confusion})

    ea = EventAccumulator(str(tmp_path / "t1"), size_guidance={"images": 0, "scalars": 0})
    ea.Reload()
    assert [s.value for s in ea.Scalars("val/macro_f1")] == [0.10000000149011612, 0.20000000298023224, 0.20000000298023224]
    assert ea.Scalars("test/macro_f1")[0].value == np.float32(0.3)
    images = ea.Images("samples/per_class_rows")
    assert images[0].height == 7 * 48 and images[0].width == 8 * 48
    assert ea.Images("confusion/test")
    content = ea.PluginTagToContent("hparams")
    start = hp_metadata.parse_session_start_info_plugin_data(content[hp_metadata.SESSION_START_INFO_TAG])
    assert start.hparams["classifier.backbone"].string_value == "cnn3"
    assert start.hparams["classifier.lr"].number_value == 0.001
