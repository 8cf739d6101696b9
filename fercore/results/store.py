"""The driver's results store: trial rows, epochs and artifacts in, Parquet tables (folders of parts,
fercore.results.parts) out, each flush adding only what changed since the last one."""
from __future__ import annotations

import fcntl
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from fercore.labels import CLASSES
from fercore.results.parts import PartedTable, by_runs, compact_table, restore_interrupted_migration
from fercore.results.rows import (CONFUSION, EMBEDDINGS, EPOCHS, GENERATORS, PER_CLASS, PREDICTIONS, SOURCES,
                                  TRIALS, GeneratorUse, per_class_rows, row_classes, scalars)

# Each table's key: the columns whose values name the rows that a trial recorded again replaces.
TABLE_KEYS = {TRIALS: ("trial_id",), EPOCHS: ("trial_id", "epoch"), PER_CLASS: ("trial_id",),
              GENERATORS: ("generator_key",), CONFUSION: ("trial_id",), EMBEDDINGS: ("trial_id",),
              PREDICTIONS: ("trial_id",)}


@contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
    """Hold FOLDER's lock (flock on the folder itself, dropped by the OS if the holder dies): one writer of its
    tables at a time, the sweep's flushes and a `fersweep report` compacting the folder meanwhile."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


class ResultsStore:
    """The Parquet tables of one sweep; a store made on an existing folder (a resumed sweep) loads the trial rows back
    (`trials`, every row in memory, as the sweep's summary and Pareto step read them) and where the other tables'
    rows are, so that a trial recorded again replaces its rows in every table.

    Memory per trial: its row and a key per table (and per epoch); epochs, confusion counts and embedding points
    stay on disk once flushed.
    """

    def __init__(self, folder: Path, after_flush: Callable[[], None] | None = None):
        self.folder = Path(folder)
        self.after_flush = after_flush  # called once the tables are written: fercore.sweep.storage uploads them to a URI
        self.folder.mkdir(parents=True, exist_ok=True)
        for name in TABLE_KEYS:
            restore_interrupted_migration(self.folder / name)
        self.tables = {name: PartedTable(self.folder / name, keys) for name, keys in TABLE_KEYS.items()}
        self.trials: dict[str, dict[str, Any]] = {}
        self._generators = GeneratorUse()
        for row in self.tables[TRIALS].read().to_pylist():
            self.trials[row["trial_id"]] = row
            self._generators.update(None, row)
        self._generators.changed.clear()

    def add_epoch(self, trial_id: str, metrics: dict[str, Any]) -> None:
        self.tables[EPOCHS].put((trial_id, int(metrics["epoch"])), [{"trial_id": trial_id, **scalars(metrics)}])

    def add_trial(self, row: dict[str, Any]) -> None:
        # Interned keys: 10,000 rows of 200 columns share one copy of each column name.
        row = {sys.intern(k): v for k, v in {"trial_id": row["trial_id"], **scalars(row)}.items()}
        trial_id = row["trial_id"]
        self._generators.update(self.trials.get(trial_id), row)
        self.trials[trial_id] = row
        self.tables[TRIALS].put((trial_id,), [row])
        self.tables[PER_CLASS].put((trial_id,), per_class_rows(row))

    def add_artifacts(self, trial_id: str, artifacts: dict[str, Any]) -> None:
        """The trial's test confusion matrix (rows true, columns predicted), embedding points and per-image test
        predictions, when it has them."""
        # The data set's classes, which the class ids of these artifacts index (FER2013's for an older trial).
        classes = tuple(artifacts.get("classes") or row_classes(self.trials.get(trial_id, {})))
        if artifacts.get("predictions") is not None:
            self.tables[PREDICTIONS].put((trial_id,), predictions_table(trial_id, artifacts["predictions"], classes))
        if "confusion" in artifacts:
            matrix = np.asarray(artifacts["confusion"])
            self.tables[CONFUSION].put((trial_id,), [
                {"trial_id": trial_id, "true": classes[i], "predicted": classes[j], "count": int(matrix[i, j])}
                for i in range(matrix.shape[0]) for j in range(matrix.shape[1])])
        points = artifacts.get("embedding")
        if points is not None and len(points.get("x", ())):
            n = len(points["x"])
            self.tables[EMBEDDINGS].put((trial_id,), pa.table({
                "trial_id": pa.array([trial_id] * n, pa.string()),
                "source": pa.array(np.asarray(SOURCES, dtype=object)[np.asarray(points["source"], dtype=int)],
                                   pa.string()),
                "class": pa.array(np.asarray(classes, dtype=object)[np.asarray(points["label"], dtype=int)],
                                  pa.string()),
                "x": pa.array(np.asarray(points["x"], dtype=np.float64)),
                "y": pa.array(np.asarray(points["y"], dtype=np.float64))}))

    def flush(self) -> None:
        """Write what changed since the last flush; then call after_flush."""
        for key, row in self._generators.take_changed(self.trials):
            self.tables[GENERATORS].put((key,), [row] if row is not None else [])
        with folder_lock(self.folder):
            for table in self.tables.values():
                table.write()
        if self.after_flush is not None:
            self.after_flush()

    def compact(self) -> None:
        """compact() this store's folder (its tables notice and read where their rows now are)."""
        compact(self.folder)


TRIAL_MODEL = "trial"  # predictions.parquet's model of a trial's own rows (and of rows written before the column)


def predictions_table(trial_id: str, predictions: dict[str, Any], classes: tuple[str, ...] = CLASSES) -> pa.Table:
    """A trial's rows of predictions.parquet, from its artifacts["predictions"] ({"index": test index, "true" and
    "predicted": class ids, "proba": n x classes, and under "paired" the "predicted" and "proba" of each model it was
    compared against}): trial_id, model ("trial" for its own rows; "baseline", "control", "subset" for the compared
    models', on the same test images), index, true, predicted (class names), and p_<class>, each class's probability,
    so two trials, or a trial and its baseline or controls, are compared image by image (paired) after the sweep.

    The model column is always there, so every part written now has one schema; parts of an older folder, written
    before it, grow it (fercore.results.parts, as null: read as "trial")."""
    index = np.asarray(predictions["index"], dtype=np.int64)
    models = {TRIAL_MODEL: predictions, **(predictions.get("paired") or {})}
    return pa.concat_tables([_model_rows(trial_id, model, index, predictions["true"], p["predicted"], p["proba"],
                                         classes) for model, p in models.items()])


def _model_rows(trial_id: str, model: str, index: np.ndarray, true: Any, predicted: Any, proba: Any,
                classes: tuple[str, ...]) -> pa.Table:
    proba = np.asarray(proba, dtype=np.float32).reshape(len(index), -1)
    if proba.shape[1] > len(classes):
        raise ValueError(f"predictions: {proba.shape[1]} class probabilities per image, but there are "
                         f"{len(classes)} classes")
    names = np.asarray(classes, dtype=object)
    return pa.table({
        "trial_id": pa.array([trial_id] * len(index), pa.string()),
        "model": pa.array([model] * len(index), pa.string()),
        "index": pa.array(index),
        "true": pa.array(names[np.asarray(true, dtype=int)], pa.string()),
        "predicted": pa.array(names[np.asarray(predicted, dtype=int)], pa.string()),
        **{f"p_{c}": pa.array(proba[:, i]) for i, c in enumerate(classes[:proba.shape[1]])}})


def compact(folder: str | Path) -> list[str]:
    """Merge each table's parts into one, its rows in the order of a whole rewrite (trials as recorded, epochs by
    trial and epoch, per-trial tables by trial id, generators by first use) and return the names of the tables it
    rewrote. Called when a sweep ends and by `fersweep report`; safe while a sweep writes the folder (they take
    turns under folder_lock), though a reader listing the folder in the moment the old parts go may miss one."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    by_trial = (("trial_id",), _by_trial)
    orders = {TRIALS: None, EPOCHS: (("trial_id", "epoch"), _by_trial_and_epoch), PER_CLASS: by_trial,
              CONFUSION: by_trial, EMBEDDINGS: by_trial, PREDICTIONS: by_trial,
              GENERATORS: (("generator_key",), lambda keys: _by_first_use(folder / TRIALS, keys))}
    with folder_lock(folder):
        return [name for name, order in orders.items() if compact_table(folder / name, order)]


def _by_trial(keys: pa.Table) -> np.ndarray | None:
    return by_runs(keys["trial_id"])


def _by_trial_and_epoch(keys: pa.Table) -> np.ndarray:
    keys = pa.table({"trial_id": keys["trial_id"].cast(pa.string()), "epoch": keys["epoch"]})
    return pc.sort_indices(keys, sort_keys=[("trial_id", "ascending"), ("epoch", "ascending")]).to_numpy()  # stable


def _by_first_use(trials_path: Path, generators: pa.Table) -> np.ndarray:
    """generators.parquet's rows in order of their generator's first user by trial id (generator_rows' order)."""
    first: dict[str, str] = {}
    if trials_path.exists() and "generator_key" in pq.ParquetDataset(trials_path).schema.names:
        trials = pq.read_table(trials_path, columns=["trial_id", "generator_key"])
        for tid, key in zip(trials["trial_id"].to_pylist(), trials["generator_key"].to_pylist()):
            if key and (key not in first or tid < first[key]):
                first[key] = tid
    keys = generators["generator_key"].to_pylist()
    return np.array(sorted(range(len(keys)), key=lambda i: (keys[i] not in first, first.get(keys[i], ""))),
                    dtype=np.int64)
