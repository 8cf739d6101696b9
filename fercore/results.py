"""Results of a sweep: Parquet tables and TensorBoard event files, both written by the driver.

Tables, rewritten atomically (temporary file, then rename) at every flush so they can be read at any moment:
  trials.parquet      one row per trial (keyed by trial id: a resumed driver replaying a trial replaces its row)
  epochs.parquet      one row per trial and epoch (keyed by trial id and epoch)
  per_class.parquet   one row per trial and class: trial_id, class, and each per-class figure of the trial's row
  generators.parquet  one row per distinct generator_key: its config, quality, build time and how often it was used
  confusion.parquet   one row per trial and (true, predicted) class pair: the test split's counts
  embeddings.parquet  per trial with synthetic images: up to 100 points per class and source (real / synthetic),
                      projected on the 2-D ruler gen_embedding_jsd was measured on (fercore.metrics.embedding)
per_class and generators are derived from the trial rows alone (also those loaded back on resume), so each trial
counts once; confusion and embeddings come from the trial's artifacts and are keyed by trial id too.

Per-class figures are found by name, not by a list: a row key that contains exactly one class of
fercore.labels.CLASSES as a whole `_`-separated word, after at least one other word, is that class's figure, and
its column in per_class.parquet is the key without the class: test_recall_disgust -> test_recall,
gen_fid_disgust -> gen_fid, n_train_synthetic_disgust -> n_train_synthetic, and a per-class interval such as
test_recall_disgust_ci_low -> test_recall_ci_low. So a new per-class metric appears without a change here. Config
keys (dotted) are never figures; a key naming two classes (a pairwise figure) is not a per-class figure either.
"""
from __future__ import annotations

import io
import math
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from fercore.atomic import atomic_write
from fercore.labels import CLASSES

TRIALS = "trials.parquet"
EPOCHS = "epochs.parquet"
PER_CLASS = "per_class.parquet"
GENERATORS = "generators.parquet"
CONFUSION = "confusion.parquet"
EMBEDDINGS = "embeddings.parquet"
SWEEP_RECORD = "sweep.json"  # what the sweep asked for, written by fercore.sweep, read by fercore.report
SOURCES = ("real", "synthetic")  # embeddings.parquet's source column, by embedding_sample's source index


def write_table_atomic(path: Path, rows: list[dict[str, Any]]) -> None:
    """Write rows (dicts that may differ in keys) as one Parquet file, replacing PATH only when complete."""
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    table = pa.table({c: pa.array([row.get(c) for row in rows]) for c in columns}) if rows else pa.table({})
    atomic_write(path, lambda f: pq.write_table(table, f))


def class_figure(key: str) -> tuple[str, str] | None:
    """('test_recall', 'disgust') for test_recall_disgust; None for an overall figure, a config key, or a key that
    names no class or two of them."""
    if "." in key:
        return None
    words = key.split("_")
    found = [i for i, w in enumerate(words) if w in CLASSES]
    if len(found) != 1 or found[0] == 0:
        return None
    i = found[0]
    return "_".join(words[:i] + words[i + 1:]), words[i]


def _names_a_class(key: str) -> bool:
    return any(w in CLASSES for w in key.split("_"))


def per_class_rows(row: dict[str, Any]) -> list[dict[str, Any]]:
    """The per_class.parquet rows of one trial row: one per class that has at least one figure, in CLASSES order."""
    figures: dict[str, dict[str, Any]] = {}
    for key, value in row.items():
        if not _is_number(value):
            continue
        found = class_figure(key)
        if found:
            figures.setdefault(found[1], {})[found[0]] = value
    return [{"trial_id": row["trial_id"], "class": c, **figures[c]} for c in CLASSES if c in figures]


def generator_rows(trials: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One generators.parquet row per generator_key seen in TRIALS (in trial id order of first use).

    The config, data fingerprint, seed and overall gen_* quality figures come from the trial that built the generator
    (generator_cache_hit false, the first by trial id if several did), else from the first trial that used it; that
    trial is `source_trial_id`, and `built_in_sweep` says whether it built the generator. generator_seconds is the
    builder's (generator training plus its pool and quality figures) and empty when no trial here built it. The
    gen_* figures measure the source trial's filtered pool; every trial's own are in trials.parquet.
    """
    users: dict[str, list[dict[str, Any]]] = {}
    for row in sorted(trials, key=lambda r: r["trial_id"]):
        if row.get("generator_key"):
            users.setdefault(row["generator_key"], []).append(row)
    out = []
    for key, rows in users.items():
        builders = [r for r in rows if r.get("generator_cache_hit") is False]
        source = builders[0] if builders else rows[0]
        out.append({
            "generator_key": key,
            # What its cache key holds: the generator config, the data set, the image size and the seed.
            **{k: v for k, v in source.items() if k.startswith("generator.") and v is not None},
            "data_fingerprint": source.get("data_fingerprint"),
            "data.image_size": source.get("data.image_size"),
            "seed": source.get("seed"),
            **{k: v for k, v in source.items() if k.startswith("gen_") and _is_number(v) and not _names_a_class(k)},
            "generator_seconds": source.get("generator_seconds") if builders else None,
            "trials": len(rows),
            "cache_hits": sum(r.get("generator_cache_hit") is True for r in rows),
            "source_trial_id": source["trial_id"],
            "built_in_sweep": bool(builders),
        })
    return out


class ResultsStore:
    """The Parquet tables of one sweep; a store made on an existing folder (a resumed sweep) loads the trials and
    epochs back and derives the other two tables from them again."""

    def __init__(self, folder: Path, after_flush: Callable[[], None] | None = None):
        self.folder = Path(folder)
        self.after_flush = after_flush  # called once the tables are written: fercore.storage uploads them to a URI
        self.folder.mkdir(parents=True, exist_ok=True)
        self.trials: dict[str, dict[str, Any]] = {}
        self.per_class: dict[str, list[dict[str, Any]]] = {}
        for row in self._read(TRIALS):
            self._keep(row)
        self.epochs: dict[tuple[str, int], dict[str, Any]] = {
            (r["trial_id"], int(r["epoch"])): r for r in self._read(EPOCHS)}
        self.confusion = _by_trial(self._read(CONFUSION))
        self.embeddings = _by_trial(self._read(EMBEDDINGS))

    def _read(self, name: str) -> list[dict[str, Any]]:
        path = self.folder / name
        return pq.read_table(path).to_pylist() if path.exists() else []

    def _keep(self, row: dict[str, Any]) -> None:
        self.trials[row["trial_id"]] = row
        self.per_class[row["trial_id"]] = per_class_rows(row)

    def add_epoch(self, trial_id: str, metrics: dict[str, Any]) -> None:
        self.epochs[(trial_id, int(metrics["epoch"]))] = {"trial_id": trial_id, **_scalars(metrics)}

    def add_trial(self, row: dict[str, Any]) -> None:
        self._keep({"trial_id": row["trial_id"], **_scalars(row)})

    def add_artifacts(self, trial_id: str, artifacts: dict[str, Any]) -> None:
        """The trial's test confusion matrix (rows true, columns predicted) and embedding points, when it has them."""
        if "confusion" in artifacts:
            matrix = np.asarray(artifacts["confusion"])
            self.confusion[trial_id] = [
                {"trial_id": trial_id, "true": CLASSES[i], "predicted": CLASSES[j], "count": int(matrix[i, j])}
                for i in range(matrix.shape[0]) for j in range(matrix.shape[1])]
        points = artifacts.get("embedding")
        if points is not None and len(points.get("x", ())):
            self.embeddings[trial_id] = [
                {"trial_id": trial_id, "source": SOURCES[int(s)], "class": CLASSES[int(c)], "x": float(x),
                 "y": float(y)}
                for s, c, x, y in zip(points["source"], points["label"], points["x"], points["y"])]

    def flush(self) -> None:
        write_table_atomic(self.folder / TRIALS, list(self.trials.values()))
        write_table_atomic(self.folder / EPOCHS, sorted(self.epochs.values(), key=lambda r: (r["trial_id"], r["epoch"])))
        write_table_atomic(self.folder / PER_CLASS, [r for t in sorted(self.per_class) for r in self.per_class[t]])
        write_table_atomic(self.folder / GENERATORS, generator_rows(list(self.trials.values())))
        write_table_atomic(self.folder / CONFUSION, [r for t in sorted(self.confusion) for r in self.confusion[t]])
        write_table_atomic(self.folder / EMBEDDINGS, [r for t in sorted(self.embeddings) for r in self.embeddings[t]])
        if self.after_flush is not None:
            self.after_flush()


def _by_trial(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        out.setdefault(r["trial_id"], []).append(r)
    return out


def _scalars(values: dict[str, Any]) -> dict[str, Any]:
    """Keep the values a Parquet column can hold as a scalar; numpy scalars become Python ones."""
    out = {}
    for k, v in values.items():
        if isinstance(v, np.generic):
            v = v.item()
        if v is None or isinstance(v, (bool, int, float, str)):
            out[k] = v
    return out


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _finite(v: Any) -> bool:
    return _is_number(v) and math.isfinite(v)


# What finish() writes as the trial's result (`result/<key>`, the HParams table's comparison columns): overall
# figures only, the per-class ones would make the table unreadable (they are in per_class.parquet).
RESULT_PREFIXES = ("val_", "test_", "uplift_", "gen_", "filter_acceptance", "leak_")
RESULT_KEYS = ("train_seconds", "generator_seconds", "classifier_seconds")


def is_result_metric(key: str) -> bool:
    return (key.startswith(RESULT_PREFIXES) or key in RESULT_KEYS) and not _names_a_class(key)


def is_curve(key: str) -> bool:
    """Per-epoch learning curves: overall train_ and val_ figures and the learning rate. Totals reported once
    (train_seconds) and whatever the last epoch's report carries beyond its epoch (test_, gen_ ...) are not."""
    return key == "lr" or (key.startswith(("train_", "val_")) and not key.endswith("_seconds")
                           and not _names_a_class(key))


class TensorBoardWriter:
    """Event files under tb/<trial_id>/: learning curves per epoch, then an HParams session per trial with its
    result figures, its grid of synthetic samples and its test confusion matrix.

    The HParams plugin builds its experiment from every trial's session (no experiment summary is written): its
    hyperparameter columns are the union of all trials' config keys, so trials whose conditional keys differ share
    one table, each showing its own; its metric columns are every scalar tag of the trials' runs, the value being a
    tag's last one. Hence two groups of tags: the curves (train/loss, val/macro_f1, lr ...) and `result/<row key>`,
    one point per trial holding exactly its trials.parquet figures (val_ of the best epoch, test_, uplift_, gen_ ...).
    The result figures get their own tags because TensorBoard's data server drops a tag's points from step s on when
    a point at step s arrives: writing the best epoch's val_macro_f1 over the curve would rewrite the curve's end.
    """

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self._writers: dict[str, Any] = {}

    def _writer(self, trial_id: str):
        if trial_id not in self._writers:
            from torch.utils.tensorboard import SummaryWriter

            self._writers[trial_id] = SummaryWriter(str(self.folder / trial_id))
        return self._writers[trial_id]

    def epoch(self, trial_id: str, epoch: int, metrics: dict[str, Any]) -> None:
        w = self._writer(trial_id)
        for k, v in metrics.items():
            if is_curve(k) and _finite(v):
                w.add_scalar(_tag(k), v, epoch)
        w.flush()

    def finish(self, trial_id: str, config: dict[str, Any], final: dict[str, Any], artifacts: dict[str, Any]) -> None:
        """Write the trial's HParams session (its config, status and result figures) and its images, then close."""
        w = self._writer(trial_id)
        hp = {k: v for k, v in config.items() if isinstance(v, (bool, str)) or _finite(v)}
        status = final.get("status", "completed")
        for summary in _session_summaries(hp, status):
            w.file_writer.add_summary(summary)
        step = int(final.get("epochs_run", 0) or 0)
        for k, v in final.items():
            if is_result_metric(k) and _finite(v):
                w.add_scalar(f"result/{k}", float(v), step)
        if "samples_png" in artifacts:
            w.add_image("samples/per_class_rows", _png_to_array(artifacts["samples_png"]), 0, dataformats="HW")
        if "confusion" in artifacts:
            w.add_image("confusion/test", confusion_image(np.asarray(artifacts["confusion"])), 0, dataformats="HWC")
        w.flush()
        w.close()
        self._writers.pop(trial_id, None)

    def close(self) -> None:
        for w in self._writers.values():
            w.close()
        self._writers.clear()


def _session_summaries(hp: dict[str, Any], status: str) -> list[Any]:
    """HParams session start (hyperparameters) and end (status) summaries.

    Built here rather than with torch's hparams(), which stores a bool as the number 1.0 (bool is an int) and marks
    every session a success: here a bool stays a bool, and error and diverged trials end as failures, which the
    HParams dashboard can filter out.
    """
    from tensorboard.compat.proto import summary_pb2
    from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

    start = plugin_data_pb2.SessionStartInfo(start_time_secs=time.time())
    for k, v in hp.items():
        if isinstance(v, bool):
            start.hparams[k].bool_value = v
        elif isinstance(v, str):
            start.hparams[k].string_value = v
        else:
            start.hparams[k].number_value = float(v)
    ok = status in ("completed", "stopped")  # stopped: ASHA ended it early, by design
    end = plugin_data_pb2.SessionEndInfo(status=api_pb2.STATUS_SUCCESS if ok else api_pb2.STATUS_FAILURE,
                                         end_time_secs=time.time())
    out = []
    for tag, data in ((metadata.SESSION_START_INFO_TAG, plugin_data_pb2.HParamsPluginData(session_start_info=start)),
                      (metadata.SESSION_END_INFO_TAG, plugin_data_pb2.HParamsPluginData(session_end_info=end))):
        # In the form TensorBoard's readers migrate hparams summaries to: a tensor time series with an empty tensor.
        md = metadata.create_summary_metadata(data)
        md.data_class = summary_pb2.DATA_CLASS_TENSOR
        out.append(summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, metadata=md,
                                                                        tensor=metadata.NULL_TENSOR)]))
    return out


def _tag(metric: str) -> str:
    """val_macro_f1 -> val/macro_f1, so TensorBoard groups a split's curves together."""
    split, _, name = metric.partition("_")
    return f"{split}/{name}" if split in ("train", "val", "test") and name else metric


def _png_to_array(data: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)).convert("L"))


def confusion_image(matrix: np.ndarray, class_names: tuple[str, ...] = CLASSES) -> np.ndarray:
    """Render a confusion matrix (rows true, columns predicted) as an RGB uint8 picture with counts and names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4.5), dpi=80)
    draw_confusion(ax, matrix, class_names)
    ax.set_title("Test confusion (row-normalised colour, counts)")
    fig.tight_layout()
    fig.canvas.draw()
    image = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    return image


def draw_confusion(ax, matrix: np.ndarray, class_names: tuple[str, ...] = CLASSES):
    """A confusion matrix (rows true, columns predicted) on matplotlib axes AX: colour is the share of the true
    class's images, each cell shows its count; returns the image (for a colour bar)."""
    matrix = np.asarray(matrix)
    norm = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
    image = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            ax.text(j, i, str(int(matrix[i, j])), ha="center", va="center", fontsize=8,
                    color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right")
    ax.set_yticks(range(len(class_names)), class_names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    return image
