"""One trial, end to end, without Ray: config -> generator (training split only) -> synthetic pool -> mix ->
classifier trained on the device -> per-epoch validation reports -> one read of the test split -> one result row.

`run()` is called by the sweep layer (which adapts `report` to Ray Tune) and by `fersweep trial` (which logs it).
"""
from __future__ import annotations

import io
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np
import torch

from fercore.augment.policies import mix, plan_mix
from fercore.classifiers import build_classifier
from fercore.config import TrialConfig, resolve
from fercore.data import FaceSet
from fercore.errors import ConfigError
from fercore.generators import build_generator
from fercore.metrics import confusion
from fercore.metrics.classification import bootstrap_intervals
from fercore.train import Trainer, metrics_from_proba, pick_device

# report(epoch, metrics, artifacts): metrics are flat scalars; artifacts (only with the last epoch) hold the
# trial's result row (without its config), the confusion matrix and a PNG grid of synthetic samples per class.
Report = Callable[[int, dict[str, float], "dict[str, Any] | None"], None]
GRID_COLUMNS = 8


@dataclass
class TrialResult:
    row: dict[str, Any]  # every config key, then metrics, then bookkeeping: one row of trials.parquet
    epochs: list[dict[str, float]] = field(default_factory=list)
    artifacts: dict[str, Any] = field(default_factory=dict)


def _print_report(epoch: int, metrics: dict[str, float], artifacts: dict | None) -> None:
    keys = ("train_loss", "val_loss", "val_accuracy", "val_macro_f1")
    print(f"epoch {epoch:3d}  " + "  ".join(f"{k}={metrics[k]:.4f}" for k in keys if k in metrics), flush=True)


def run(config: Mapping[str, Any] | TrialConfig, data: FaceSet, report: Report = _print_report) -> TrialResult:
    cfg = config if isinstance(config, TrialConfig) else resolve(config)
    if cfg.data.image_size != data.image_size:
        raise ConfigError(f"data.image_size: config says {cfg.data.image_size} but the data set has "
                          f"{data.image_size}x{data.image_size} images")
    started = time.perf_counter()
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    torch.manual_seed(cfg.seed)
    device = pick_device(cfg.train.device)
    num_classes = len(data.class_names)

    # Mix: the generator sees the training split only; validation and test images never reach it.
    train_x, train_y = data.split("train")
    counts = np.bincount(train_y, minlength=num_classes)
    plan = plan_mix(cfg.augment.policy, counts, dict(cfg.augment.values))
    artifacts: dict[str, Any] = {}
    synthetic: dict[int, np.ndarray] = {}
    generator_seconds = 0.0
    if plan.synthetic.sum() > 0:
        t0 = time.perf_counter()
        generator = build_generator(dict(cfg.generator.values), data.image_size, num_classes, device)
        generator.fit(train_x, train_y, seed=cfg.seed)
        # Each class gets its own seed stream so a class's pool does not depend on the other classes' counts.
        synthetic = {c: generator.sample(int(n), c, seed=cfg.seed * 1000 + c) for c, n in enumerate(plan.synthetic)}
        grid = [generator.sample(GRID_COLUMNS, c, seed=cfg.seed * 1000 + 500 + c) for c in range(num_classes)]
        artifacts["samples_png"] = grid_png(np.stack(grid))
        generator_seconds = time.perf_counter() - t0
    mixed_x, mixed_y, is_synthetic = mix(train_x, train_y, plan, synthetic, seed=cfg.seed)

    # Train the classifier; validation picks the epoch, the test split is read once at the end.
    t0 = time.perf_counter()
    model = build_classifier(cfg.classifier, data.image_size, num_classes)
    trainer = Trainer(model, (mixed_x, mixed_y), data.split("val"), cfg.classifier, cfg.train, cfg.seed, device,
                      num_classes)
    epochs: list[dict[str, float]] = []
    final: dict[str, Any] = {}
    for result in trainer.epochs():
        metrics = {"epoch": result.epoch, **result.metrics}
        epochs.append(metrics)
        if result.last:
            trainer.restore_best()
            test_x, test_y = data.split("test")
            proba = trainer.predict_proba(torch.from_numpy(test_x).to(device))
            artifacts["confusion"] = confusion(test_y, proba.argmax(1), num_classes).tolist()
            # The last report carries the whole result: the best epoch's validation metrics, the test metrics of
            # its weights, and the bookkeeping, so a driver can build the row from the report stream alone.
            kept = epochs[trainer.best_epoch - 1] if trainer.best_epoch else metrics
            final = {
                **{k: v for k, v in kept.items() if k.startswith("val_")},
                **metrics_from_proba(proba, test_y, "test"),
                **bootstrap_intervals(test_y, proba.argmax(1), "test", num_classes, seed=cfg.seed),
                "status": "completed", "reason": "",
                "best_epoch": trainer.best_epoch, "epochs_run": len(epochs),
                "n_train_real": int((~is_synthetic).sum()), "n_train_synthetic": int(is_synthetic.sum()),
                "generator_seconds": generator_seconds, "classifier_seconds": time.perf_counter() - t0,
                "train_seconds": time.perf_counter() - started, "device": str(device),
                "data_fingerprint": data.fingerprint,
            }
            # The epoch's own keys keep the last epoch's values (the epochs table stays true); the row, whose val_
            # metrics are the best epoch's, travels whole as an artifact.
            metrics = {**metrics, **{k: v for k, v in final.items() if not k.startswith("val_")}}
            artifacts["row"] = final
        report(result.epoch, metrics, artifacts if result.last else None)
    return TrialResult({**cfg.flat(), **final}, epochs, artifacts)


def grid_png(images: np.ndarray) -> bytes:
    """classes x columns x H x W uint8 -> one PNG with a row per class."""
    from PIL import Image

    rows, cols, h, w = images.shape
    canvas = images.transpose(0, 2, 1, 3).reshape(rows * h, cols * w)
    buf = io.BytesIO()
    Image.fromarray(canvas).save(buf, format="PNG")
    return buf.getvalue()
