import io

import numpy as np
import pytest
import pyarrow.parquet as pq
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import api_pb2
from tensorboard.plugins.hparams import metadata as hp_metadata

from fercore.labels import CLASSES
from fercore.results import ResultsStore, TensorBoardWriter, confusion_png, read_table, table_files
from fercore.results.tensorboard import _png_to_array
from fercore.trial import grid_png


def test_store_writes_parquet_and_keeps_each_trial_once(tmp_path):
    store = ResultsStore(tmp_path)
    store.add_trial({"trial_id": "a", "classifier.backbone": "cnn3", "test_accuracy": 0.5, "status": "completed"})
    store.add_trial({"trial_id": "b", "classifier.backbone": "resnet18", "classifier.small_stem": True,
                     "status": "error", "reason": "boom"})
    store.add_epochs("a", [{"epoch": 1, "val_macro_f1": 0.1}, {"epoch": 2, "val_macro_f1": 0.2}])
    store.add_epochs("b", [{"epoch": 1, "val_macro_f1": 0.1}])
    store.flush()
    # The same trial again (a resumed driver replaying it; a retried trial) replaces its row and its epochs.
    again = ResultsStore(tmp_path)
    again.add_trial({"trial_id": "a", "classifier.backbone": "cnn3", "test_accuracy": 0.5, "status": "completed"})
    again.add_epochs("a", [{"epoch": 1, "val_macro_f1": 0.15}, {"epoch": 2, "val_macro_f1": 0.25}])
    again.flush()
    trials = read_table(tmp_path, "trials.parquet").to_pylist()
    assert sorted(r["trial_id"] for r in trials) == ["a", "b"]
    by_id = {r["trial_id"]: r for r in trials}
    assert by_id["b"]["classifier.small_stem"] is True and by_id["a"]["classifier.small_stem"] is None
    assert by_id["b"]["test_accuracy"] is None and by_id["b"]["reason"] == "boom"
    epochs = read_table(tmp_path, "epochs.parquet").to_pylist()
    assert [(r["trial_id"], r["epoch"], r["val_macro_f1"]) for r in epochs] == [("a", 1, 0.15), ("a", 2, 0.25),
                                                                                  ("b", 1, 0.1)]
    assert not list(tmp_path.glob("*.tmp"))


def test_tensorboard_events_read_back_by_tensorboard(tmp_path):
    tb = TensorBoardWriter(tmp_path)
    for epoch in (1, 2):
        tb.epoch("t1", epoch, {"epoch": epoch, "train_loss": 1.0 / epoch, "val_macro_f1": 0.1 * epoch,
                               "val_recall_disgust": 0.5, "time_total_s": 3.0 * epoch, "node_ip": "1.2.3.4"})
    grid = grid_png(np.random.default_rng(0).integers(0, 255, (7, 8, 48, 48), dtype=np.uint8))
    confusion = np.eye(7, dtype=int) * 3
    tb.finish("t1", {"classifier.backbone": "cnn3", "classifier.lr": 0.001, "classifier.small_stem": True},
              {"status": "error", "epochs_run": 2, "val_macro_f1": 0.25, "test_macro_f1": 0.3, "gen_fid": 7.0,
               "gen_fid_disgust": 9.0, "uplift_test_macro_f1": 0.02, "train_seconds": 12.0, "best_epoch": 1},
              {"samples_png": grid, "confusion": confusion})

    ea = EventAccumulator(str(tmp_path / "t1"), size_guidance={"images": 0, "scalars": 0})
    ea.Reload()
    # Curves: overall train_/val_ figures per epoch; the row's figures under result/, one point at the last epoch.
    assert [(s.step, s.value) for s in ea.Scalars("val/macro_f1")] == [(1, np.float32(0.1)), (2, np.float32(0.2))]
    results = {tag: ea.Scalars(tag) for tag in ea.Tags()["scalars"] if tag.startswith("result/")}
    assert {tag: [(s.step, s.value) for s in v] for tag, v in results.items()} == {
        "result/val_macro_f1": [(2, np.float32(0.25))], "result/test_macro_f1": [(2, np.float32(0.3))],
        "result/gen_fid": [(2, 7.0)], "result/uplift_test_macro_f1": [(2, np.float32(0.02))],
        "result/train_seconds": [(2, 12.0)]}
    assert set(ea.Tags()["scalars"]) - set(results) == {"train/loss", "val/macro_f1"}  # no per-class, no wall clock
    images = ea.Images("samples/per_class_rows")
    assert images[0].height == 7 * 48 and images[0].width == 8 * 48
    assert images[0].encoded_image_string == grid  # stored as the trial made it, not decoded and encoded again
    drawn = ea.Images("confusion/test")[0]  # drawn here from the matrix: no confusion_png came with it
    assert _png_to_array(drawn.encoded_image_string).shape == (drawn.height, drawn.width, 3)
    content = ea.PluginTagToContent("hparams")
    start = hp_metadata.parse_session_start_info_plugin_data(content[hp_metadata.SESSION_START_INFO_TAG])
    assert start.hparams["classifier.backbone"].string_value == "cnn3"
    assert start.hparams["classifier.lr"].number_value == 0.001
    assert start.hparams["classifier.small_stem"].WhichOneof("kind") == "bool_value"
    end = hp_metadata.parse_session_end_info_plugin_data(content[hp_metadata.SESSION_END_INFO_TAG])
    assert end.status == api_pb2.STATUS_FAILURE


def _row(trial_id, key=None, hit=None, **extra):
    """A trial row as the sweep writes it: config, overall and per-class figures, bookkeeping."""
    i = int(trial_id[1:])
    row = {"trial_id": trial_id, "classifier.backbone": "cnn3", "augment.classes": "disgust,fear", "seed": i % 2,
           "data.image_size": 48, "status": "completed", "test_macro_f1": 0.5, "data_fingerprint": "fp0"}
    row |= {f"test_recall_{c}": i + k / 10 for k, c in enumerate(CLASSES)}
    row |= {f"test_f1_{c}": k / 10 for k, c in enumerate(CLASSES)}
    row |= {"test_recall_disgust_ci_low": 0.01 * i, "confusion_angry_sad": 3}  # an interval; a pairwise figure
    if key:
        row |= {"generator.type": "cgan", "generator.width": 4 + i, "generator_key": key, "generator_cache_hit": hit,
                "generator_seconds": 100.0 + i, "gen_fid": 10.0 + i, "gen_conditional_accuracy": 0.5,
                "gen_embedding_jsd": 0.25, "filter_acceptance": 0.9, "uplift_test_macro_f1": 0.02}
        row |= {f"gen_fid_{c}": 20.0 + k for k, c in enumerate(CLASSES)}
        row |= {f"gen_embedding_jsd_{c}": np.float64(0.1 * k) for k, c in enumerate(CLASSES)}
        row |= {f"filter_acceptance_{c}": 0.5 for c in CLASSES}
        row |= {f"uplift_test_recall_{c}": -0.1 for c in CLASSES}
        row |= {f"n_train_synthetic_{c}": 10 * k for k, c in enumerate(CLASSES)}
    return row | extra


def _read(path):
    """A table as its folder's manifest commits it (during a sweep, parts a commit dropped wait a while for readers
    of the previous manifest: a reader of the folder itself would count their rows again)."""
    return read_table(path.parent, path.name).to_pylist()


def test_per_class_and_generator_tables_are_derived_from_the_trial_rows(tmp_path):
    store = ResultsStore(tmp_path)
    store.flush()  # readable from the first flush, before any trial
    assert _read(tmp_path / "per_class.parquet") == [] and _read(tmp_path / "generators.parquet") == []

    store.add_trial(_row("t1", "g1", False))   # built g1
    store.add_trial(_row("t2", "g1", True))    # found it
    store.add_trial(_row("t3", "g2", True))    # g2 was built before this sweep (a shared cache)
    store.add_trial(_row("t4"))                # real only: no generator
    store.add_trial({"trial_id": "t5", "classifier.backbone": "cnn3", "status": "error", "reason": "boom"})
    store.flush()

    rows = _read(tmp_path / "per_class.parquet")
    assert [(r["trial_id"], r["class"]) for r in rows] == [(t, c) for t in ("t1", "t2", "t3", "t4") for c in CLASSES]
    by = {(r["trial_id"], r["class"]): r for r in rows}
    fear = by["t2", "fear"]
    assert fear["test_recall"] == 2.2 and fear["test_f1"] == 0.2 and fear["gen_fid"] == 22.0
    assert fear["gen_embedding_jsd"] == pytest.approx(0.2) and fear["filter_acceptance"] == 0.5
    assert fear["uplift_test_recall"] == -0.1 and fear["n_train_synthetic"] == 20
    assert by["t2", "disgust"]["test_recall_ci_low"] == 0.02 and fear["test_recall_ci_low"] is None
    assert by["t4", "fear"]["gen_fid"] is None and by["t4", "fear"]["test_recall"] == 4.2
    columns = set(rows[0])
    assert columns == {"trial_id", "class", "test_recall", "test_f1", "test_recall_ci_low", "gen_fid",
                       "gen_embedding_jsd", "filter_acceptance", "uplift_test_recall", "n_train_synthetic"}

    gens = {g["generator_key"]: g for g in _read(tmp_path / "generators.parquet")}
    assert set(gens) == {"g1", "g2"}
    g1, g2 = gens["g1"], gens["g2"]
    # g1: config, quality and build time of the trial that built it (t1), used by two trials, one from the cache.
    assert (g1["source_trial_id"], g1["built_in_sweep"], g1["trials"], g1["cache_hits"]) == ("t1", True, 2, 1)
    assert (g1["generator.type"], g1["generator.width"], g1["seed"], g1["data_fingerprint"]) == ("cgan", 5, 1, "fp0")
    assert (g1["gen_fid"], g1["gen_conditional_accuracy"], g1["generator_seconds"]) == (11.0, 0.5, 101.0)
    # g2: no trial here built it; its figures are its first user's, and no build time is claimed.
    assert (g2["source_trial_id"], g2["built_in_sweep"], g2["trials"], g2["cache_hits"]) == ("t3", False, 1, 1)
    assert g2["gen_fid"] == 13.0 and g2["generator_seconds"] is None
    # Its build time shared among the trials that used it; none where no trial here built it.
    assert g1["generator_seconds_amortised"] == 101.0 / 2 and g2["generator_seconds_amortised"] is None
    assert not {k for k in g1 if k.startswith("gen_fid_") or k.startswith(("test_", "classifier."))}
    assert not list(tmp_path.glob("*.tmp"))


def test_derived_tables_count_each_trial_once_across_replays_and_resume(tmp_path):
    store = ResultsStore(tmp_path)
    store.add_trial(_row("t1", "g1", False))
    store.add_trial(_row("t2", "g1", True))
    store.flush()
    before = (_read(tmp_path / "per_class.parquet"), _read(tmp_path / "generators.parquet"))

    # A resumed driver: a new store on the folder, trials replayed (t2 with a changed figure), one new trial.
    again = ResultsStore(tmp_path)
    again.flush()
    assert (_read(tmp_path / "per_class.parquet"), _read(tmp_path / "generators.parquet")) == before
    again.add_trial(_row("t2", "g1", True, test_recall_fear=0.99))
    again.add_trial(_row("t1", "g1", False))
    again.add_trial(_row("t3", "g1", True))
    again.flush()
    rows = _read(tmp_path / "per_class.parquet")
    assert len(rows) == 3 * len(CLASSES)
    assert len({(r["trial_id"], r["class"]) for r in rows}) == len(rows)
    assert {r["test_recall"] for r in rows if r["trial_id"] == "t2" and r["class"] == "fear"} == {0.99}
    [g1] = _read(tmp_path / "generators.parquet")
    assert (g1["trials"], g1["cache_hits"], g1["source_trial_id"]) == (3, 2, "t1")
    assert len(_read(tmp_path / "trials.parquet")) == 3


def _predictions(n: int, seed: int) -> dict:
    """A trial's artifacts["predictions"] in the format fercore.trial sends them (the issue 15 contract)."""
    rng = np.random.default_rng(seed)
    proba = rng.dirichlet(np.ones(len(CLASSES)), size=n).astype(np.float32)
    return {"index": np.arange(n, dtype=np.int64) * 3, "face_id": seed * 10_000 + rng.permutation(n).astype(np.int64),
            "true": rng.integers(0, len(CLASSES), n).astype(np.int64),
            "predicted": proba.argmax(1).astype(np.int64), "proba": proba}


def test_predictions_are_a_table_of_one_row_per_trial_and_test_image(tmp_path):
    from fercore.results import PREDICTIONS, compact

    store = ResultsStore(tmp_path)
    sent = {f"t{i}": _predictions(3000, i) for i in range(6)}  # 3,000 x 11 cells a trial (FER2013: 3,589): parts
    del sent["t5"]["face_id"]  # a trial of an older fercore sent no face ids: null
    for trial_id, predictions in sent.items():
        store.add_trial({"trial_id": trial_id, "status": "completed"})
        store.add_artifacts(trial_id, {"predictions": predictions, "row": {}})
        store.flush()  # each trial appended as it ends
    assert len(list((tmp_path / PREDICTIONS).glob("part-*.parquet"))) > 1
    store.add_artifacts("t2", {"predictions": _predictions(10, 99)})  # a trial recorded again replaces its rows
    store.flush()
    sent["t2"] = _predictions(10, 99)

    def check():
        table = read_table(tmp_path, PREDICTIONS)
        assert table.column_names == ["trial_id", "model", "index", "face_id", "true", "predicted",
                                      *(f"p_{c}" for c in CLASSES)]
        assert set(table["model"].to_pylist()) == {"trial"}  # no paired models sent here
        assert str(table.schema.field("index").type) == "int64" and str(table.schema.field("p_sad").type) == "float"
        rows = table.to_pylist()
        for trial_id, predictions in sent.items():
            mine = [r for r in rows if r["trial_id"] == trial_id]
            assert [r["index"] for r in mine] == predictions["index"].tolist()
            assert [r["face_id"] for r in mine] == (predictions["face_id"].tolist() if "face_id" in predictions
                                                    else [None] * len(mine))
            assert [r["true"] for r in mine] == [CLASSES[i] for i in predictions["true"]]
            assert [r["predicted"] for r in mine] == [CLASSES[i] for i in predictions["predicted"]]
            proba = np.array([[r[f"p_{c}"] for c in CLASSES] for r in mine], dtype=np.float32)
            assert np.array_equal(proba, predictions["proba"])
        return rows

    check()
    compact(tmp_path)
    assert len(list((tmp_path / PREDICTIONS).glob("part-*.parquet"))) == 1
    rows = check()
    assert [r["trial_id"] for r in rows] == sorted(r["trial_id"] for r in rows)  # by trial once compacted
    store.add_artifacts("t9", {"confusion": np.eye(7, dtype=int).tolist()})  # no predictions: no rows, no error
    store.flush()
    assert len(read_table(tmp_path, PREDICTIONS)) == len(rows)


def _paired(predictions: dict, models: tuple[str, ...], seed: int) -> dict:
    """PREDICTIONS with, under "paired", those of the models the trial was compared against (as fercore.trial sends)."""
    paired = {}
    for i, model in enumerate(models):
        other = _predictions(len(predictions["index"]), seed * 10 + i + 1)
        paired[model] = {"predicted": other["predicted"], "proba": other["proba"]}
    return {**predictions, "paired": paired}


def test_predictions_hold_the_compared_models_rows_and_grow_an_older_folder_mid_sweep(tmp_path):
    """A trial's baseline and controls get rows of their own (model column), on the trial's test images. A results
    folder written before the column (a sweep resumed with this fercore) keeps its rows, read as the trials' own: the
    folder's parts end with one schema."""
    from fercore.results import PREDICTIONS
    from fercore.results.store import predictions_table

    old = predictions_table("t0", _predictions(50, 0)).drop_columns(["model"])  # as an earlier fercore wrote it
    (tmp_path / PREDICTIONS).mkdir()
    pq.write_table(old, tmp_path / PREDICTIONS / "part-00000000.parquet")
    store = ResultsStore(tmp_path)
    sent = _paired(_predictions(50, 1), ("baseline", "control", "subset"), 1)
    store.add_trial({"trial_id": "t1", "status": "completed"})
    store.add_artifacts("t1", {"predictions": sent})
    store.flush()
    names = [p.name for p in table_files(tmp_path, PREDICTIONS)]
    schemas = [pq.read_schema(tmp_path / PREDICTIONS / n) for n in names]
    assert all(s.equals(schemas[0]) for s in schemas) and "model" in schemas[0].names
    rows = read_table(tmp_path, PREDICTIONS).to_pylist()
    assert [r["model"] for r in rows if r["trial_id"] == "t0"] == [None] * 50  # older rows: the trial's own
    for model in ("trial", "baseline", "control", "subset"):
        mine = [r for r in rows if r["trial_id"] == "t1" and r["model"] == model]
        p = sent if model == "trial" else sent["paired"][model]
        assert [r["index"] for r in mine] == sent["index"].tolist()
        assert [r["true"] for r in mine] == [CLASSES[i] for i in sent["true"]]
        assert [r["predicted"] for r in mine] == [CLASSES[i] for i in p["predicted"]]
        assert np.array_equal(np.array([[r[f"p_{c}"] for c in CLASSES] for r in mine], dtype=np.float32), p["proba"])
    # Recorded again without its controls (a replayed trial): every row of the trial is replaced, paired ones too.
    store.add_artifacts("t1", {"predictions": _predictions(50, 1)})
    store.flush()
    rows = read_table(tmp_path, PREDICTIONS).to_pylist()
    assert {r["model"] for r in rows if r["trial_id"] == "t1"} == {"trial"} and len(rows) == 100


def test_tensorboard_keeps_a_workers_confusion_png_and_reencodes_a_palette_png(tmp_path):
    from PIL import Image

    tb = TensorBoardWriter(tmp_path)
    rendered = confusion_png(np.eye(3, dtype=int), ("a", "b", "c"))
    buffer = io.BytesIO()
    Image.fromarray(np.arange(48, dtype=np.uint8).reshape(6, 8)).convert("P").save(buffer, format="PNG")
    palette = buffer.getvalue()
    tb.finish("t1", {}, {"status": "completed", "epochs_run": 1},
              {"samples_png": palette, "confusion": np.eye(3, dtype=int), "confusion_png": rendered})
    ea = EventAccumulator(str(tmp_path / "t1"), size_guidance={"images": 0})
    ea.Reload()
    assert ea.Images("confusion/test")[0].encoded_image_string == rendered
    samples = ea.Images("samples/per_class_rows")[0]
    assert (samples.height, samples.width) == (6, 8)
    assert _png_to_array(samples.encoded_image_string).shape in ((6, 8), (6, 8, 3))


def test_the_confusion_picture_ignores_the_processs_matplotlib_style():
    """A driver that also drew a report (whose plots change rcParams) draws the matrix as a worker does."""
    import matplotlib.pyplot as plt

    matrix = np.arange(49).reshape(7, 7)
    before = confusion_png(matrix)
    with plt.rc_context({"font.size": 9, "axes.grid": True}):
        assert np.array_equal(_png_to_array(confusion_png(matrix)), _png_to_array(before))
