"""TensorBoard event files of a sweep, under tb/<run>/, written by the driver: learning curves per epoch, then an
HParams session per trial with its result figures, its grid of synthetic samples and its test confusion matrix. A
run is named by what its trial was (backbone, generator, policy, seed) and ends with the trial's id (run_name), and
tb/ holds a custom-scalars layout that puts each trial's uplift over real-only beside its gain over the oversampling
control."""
from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

import numpy as np

from fercore.labels import CLASSES
from fercore.numbers import finite
from fercore.results.rows import is_curve, is_result_metric, row_classes


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
        self._layout_written = False

    def _writer(self, trial_id: str, config: dict[str, Any] | None):
        if trial_id not in self._writers:
            from torch.utils.tensorboard import SummaryWriter

            if not self._layout_written:
                write_layout(self.folder)
                self._layout_written = True
            self._writers[trial_id] = SummaryWriter(str(self.folder / run_name(trial_id, config or {})))
        return self._writers[trial_id]

    def epoch(self, trial_id: str, epoch: int, metrics: dict[str, Any], config: dict[str, Any] | None = None) -> None:
        """One epoch's curves; CONFIG (the trial's, once known) names its run when this is its first event."""
        w = self._writer(trial_id, config)
        for k, v in metrics.items():
            if is_curve(k) and finite(v):
                w.add_scalar(_tag(k), v, epoch)
        w.flush()

    def finish(self, trial_id: str, config: dict[str, Any], final: dict[str, Any], artifacts: dict[str, Any]) -> None:
        """Write the trial's HParams session (its config, status and result figures) and its images, then close."""
        w = self._writer(trial_id, config)
        hp = {k: v for k, v in config.items() if isinstance(v, (bool, str)) or finite(v)}
        status = final.get("status", "completed")
        for summary in _session_summaries(hp, status):
            w.file_writer.add_summary(summary)
        step = int(final.get("epochs_run", 0) or 0)
        classes = tuple(artifacts.get("classes") or row_classes(final))  # the data set's classes
        for k, v in final.items():
            if is_result_metric(k, classes) and finite(v):
                w.add_scalar(f"result/{k}", float(v), step)
        if "samples_png" in artifacts:
            w.file_writer.add_summary(png_summary("samples/per_class_rows", artifacts["samples_png"]), 0)
        # A sweep's worker renders its confusion matrix (fercore.sweep.trainable): drawn here, matplotlib took a
        # third of the driver's time (driver_scale, 500 trials), and the driver serves every trial of the sweep.
        png = artifacts.get("confusion_png")
        if png is None and "confusion" in artifacts:
            png = confusion_png(np.asarray(artifacts["confusion"]), classes)
        if png is not None:
            w.file_writer.add_summary(png_summary("confusion/test", png), 0)
        w.flush()
        w.close()
        self._writers.pop(trial_id, None)

    def close(self) -> None:
        for w in self._writers.values():
            w.close()
        self._writers.clear()


RUN_KEYS = ("classifier.backbone", "generator.type", "augment.policy")  # what a run's name says, then the seed
LAYOUT_RUN = ".layout"  # tb/'s run holding the custom-scalars layout alone


def run_name(trial_id: str, config: dict[str, Any]) -> str:
    """A trial's run: its backbone, generator (real: none), policy and seed, then its id (unique, and what the
    tables call it), e.g. resnet18_cgan_balance_s2_8f3a21c0."""
    parts = [str(config.get("classifier.backbone") or ""), str(config.get("generator.type") or "real"),
             str(config.get("augment.policy") or "")]
    if config.get("seed") is not None:
        parts.append(f"s{config['seed']}")
    named = "_".join(p for p in parts if p and p != "None")
    safe = "".join(c if c.isalnum() or c in "-._" else "-" for c in named)
    return f"{safe}_{trial_id}" if config else trial_id


def run_dir(folder: Path, trial_id: str) -> Path | None:
    """The run folder of TRIAL_ID under tb/ FOLDER (named by run_name), None when it has none."""
    for path in Path(folder).glob(f"*{trial_id}"):
        if path.is_dir() and (path.name == trial_id or path.name.endswith(f"_{trial_id}")):
            return path
    return None


def write_layout(folder: Path) -> None:
    """tb/'s custom-scalars layout: per trial, its uplift over the real-only baseline beside its gain over the
    oversampling control (and over the real subset, for real_ratio), macro-F1 and accuracy; then its validation and
    test figures. Written once per sweep, in a run of its own."""
    from torch.utils.tensorboard import SummaryWriter

    layout = {
        "Did the synthetic images help? (per trial: uplift over real-only, gain over the oversampling control)": {
            "uplift and gains, test macro-F1": ["Multiline", [r"result/uplift_test_macro_f1$",
                                                              r"result/gain_control_test_macro_f1$",
                                                              r"result/gain_subset_test_macro_f1$"]],
            "uplift and gains, test accuracy": ["Multiline", [r"result/uplift_test_accuracy$",
                                                              r"result/gain_control_test_accuracy$",
                                                              r"result/gain_subset_test_accuracy$"]]},
        "Validation against test (per trial)": {
            "validation and test macro-F1": ["Multiline", [r"result/val_macro_f1$", r"result/test_macro_f1$"]],
            "learning curve": ["Multiline", [r"val/macro_f1$", r"train/loss$", r"val/loss$"]]},
    }
    with SummaryWriter(str(Path(folder) / LAYOUT_RUN)) as w:
        w.add_custom_scalars(layout)


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

    """A PNG's pixels: H x W for a gray image, H x W x 3 for a colour one (data.channels 3)."""
    image = Image.open(io.BytesIO(data))
    return np.asarray(image.convert("L" if image.mode in ("1", "L", "I", "I;16", "F") else "RGB"))


def png_summary(tag: str, png: bytes):
    """An image summary holding PNG as it is: TensorBoard stores images PNG-encoded, so decoding it to pixels for
    add_image, which encodes them again, would be work for nothing. Its size and colours come from the header."""
    from PIL import Image
    from tensorboard.compat.proto.summary_pb2 import Summary

    image = Image.open(io.BytesIO(png))  # reads the header only
    colorspace = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4}.get(image.mode)
    if colorspace is None:  # a palette or 16-bit PNG: TensorBoard's own encoding of its pixels
        pixels = _png_to_array(png)
        png, colorspace = _encode_png(pixels), (1 if pixels.ndim == 2 else 3)
    return Summary(value=[Summary.Value(tag=tag, image=Summary.Image(
        height=image.height, width=image.width, colorspace=colorspace, encoded_image_string=png))])


def _encode_png(pixels: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def confusion_png(matrix: np.ndarray, class_names: tuple[str, ...] = CLASSES) -> bytes:
    """A confusion matrix (rows true, columns predicted) rendered with counts and names, as PNG bytes (RGB)."""
    return _encode_png(confusion_image(matrix, class_names))


def confusion_image(matrix: np.ndarray, class_names: tuple[str, ...] = CLASSES) -> np.ndarray:
    """Render a confusion matrix (rows true, columns predicted) as an RGB uint8 picture with counts and names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # matplotlib's default style, whatever the process set (the report's plots change rcParams): a worker and a driver
    # draw the same picture.
    with plt.style.context("default"):
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
