"""Results of a sweep: Parquet tables (one row per trial, one per trial and epoch) and TensorBoard event files.

The driver owns both. Tables are rewritten atomically (temporary file, then rename) whenever a trial finishes, so
they can be read at any moment, and rows are keyed by trial id (and epoch) so each trial appears exactly once.
"""
from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from fercore.atomic import atomic_write
from fercore.labels import CLASSES

TRIALS = "trials.parquet"
EPOCHS = "epochs.parquet"


def write_table_atomic(path: Path, rows: list[dict[str, Any]]) -> None:
    """Write rows (dicts that may differ in keys) as one Parquet file, replacing PATH only when complete."""
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    table = pa.table({c: pa.array([row.get(c) for row in rows]) for c in columns}) if rows else pa.table({})
    atomic_write(path, lambda f: pq.write_table(table, f))


class ResultsStore:
    """trials.parquet and epochs.parquet of one sweep, loaded back when a sweep resumes."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.trials: dict[str, dict[str, Any]] = {r["trial_id"]: r for r in self._read(TRIALS)}
        self.epochs: dict[tuple[str, int], dict[str, Any]] = {
            (r["trial_id"], int(r["epoch"])): r for r in self._read(EPOCHS)}

    def _read(self, name: str) -> list[dict[str, Any]]:
        path = self.folder / name
        return pq.read_table(path).to_pylist() if path.exists() else []

    def add_epoch(self, trial_id: str, metrics: dict[str, Any]) -> None:
        self.epochs[(trial_id, int(metrics["epoch"]))] = {"trial_id": trial_id, **_scalars(metrics)}

    def add_trial(self, row: dict[str, Any]) -> None:
        self.trials[row["trial_id"]] = {"trial_id": row["trial_id"], **_scalars(row)}

    def flush(self) -> None:
        write_table_atomic(self.folder / TRIALS, list(self.trials.values()))
        write_table_atomic(self.folder / EPOCHS, sorted(self.epochs.values(), key=lambda r: (r["trial_id"], r["epoch"])))


def _scalars(values: dict[str, Any]) -> dict[str, Any]:
    """Keep the values a Parquet column can hold as a scalar; numpy scalars become Python ones."""
    out = {}
    for k, v in values.items():
        if isinstance(v, np.generic):
            v = v.item()
        if v is None or isinstance(v, (bool, int, float, str)):
            out[k] = v
    return out


class TensorBoardWriter:
    """Event files under tb/<trial_id>/: per-epoch scalars, an HParams session per trial, sample grids, confusion."""

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
            if k != "epoch" and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                w.add_scalar(_tag(k), v, epoch)
        w.flush()

    def finish(self, trial_id: str, config: dict[str, Any], final: dict[str, Any], artifacts: dict[str, Any]) -> None:
        """Write the trial's HParams session (its config and final metrics) and its images, then close its file."""
        from torch.utils.tensorboard.summary import hparams

        w = self._writer(trial_id)
        metrics = {_tag(k): float(v) for k, v in final.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                   and k.startswith(("val_", "test_", "train_seconds"))}
        hp = {k: v for k, v in config.items() if isinstance(v, (bool, int, float, str))}
        # Only the session start and end: without an experiment tag the HParams plugin builds the experiment from all
        # trials' sessions, so trials whose conditional keys differ still share one table.
        _, ssi, sei = hparams(hp, metrics)
        w.file_writer.add_summary(ssi)
        w.file_writer.add_summary(sei)
        for tag, value in metrics.items():
            w.add_scalar(tag, value, int(final.get("epochs_run", 0) or 0))
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


def _tag(metric: str) -> str:
    """val_macro_f1 -> val/macro_f1, so TensorBoard groups a split's metrics together."""
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
    norm = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            ax.text(j, i, str(int(matrix[i, j])), ha="center", va="center", fontsize=8,
                    color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right")
    ax.set_yticks(range(len(class_names)), class_names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title("Test confusion (row-normalised colour, counts)")
    fig.tight_layout()
    fig.canvas.draw()
    image = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    return image
