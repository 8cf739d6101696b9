"""One trial, end to end, without Ray: config -> generator (training split only, cached) -> filtered synthetic pool
-> mix -> classifier trained on the device -> per-epoch validation reports -> one read of the test split -> leakage
audit and the uplift over the paired real-only baseline -> one result row.

`run()` is called by the sweep layer (which adapts `report` to Ray Tune) and by `fersweep trial` (which logs it).
"""
from __future__ import annotations

import io
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np
import torch

from fercore import cached
from fercore.augment.policies import mix, plan_mix
from fercore.cache import CacheStore
from fercore.classifiers import build_classifier
from fercore.config import TrialConfig, resolve
from fercore.data import FaceSet
from fercore.errors import ConfigError
from fercore.metrics import confusion
from fercore.metrics.classification import bootstrap_intervals
from fercore.metrics.leakage import leakage_rows
from fercore.metrics.uplift import uplift_metrics
from fercore.synthetic import make_pool
from fercore.train import Trainer, metrics_from_proba, pick_device

# report(epoch, metrics, artifacts): metrics are flat scalars; artifacts (only with the last epoch) hold the
# trial's result row (without its config), the confusion matrix, a PNG grid of synthetic samples per class and the
# projected real and synthetic points of its embedding figure.
Report = Callable[[int, dict[str, float], "dict[str, Any] | None"], None]


@dataclass
class TrialResult:
    row: dict[str, Any]  # every config key, then metrics, then bookkeeping: one row of trials.parquet
    epochs: list[dict[str, float]] = field(default_factory=list)
    artifacts: dict[str, Any] = field(default_factory=dict)


def _print_report(epoch: int, metrics: dict[str, float], artifacts: dict | None) -> None:
    keys = ("train_loss", "val_loss", "val_accuracy", "val_macro_f1")
    print(f"epoch {epoch:3d}  " + "  ".join(f"{k}={metrics[k]:.4f}" for k in keys if k in metrics), flush=True)


def run(config: Mapping[str, Any] | TrialConfig, data: FaceSet, report: Report = _print_report,
        cache: CacheStore | None = None) -> TrialResult:
    """CACHE holds trained generators, synthetic pools, the reference classifier and real-only baselines (a sweep
    passes one under its storage); without one, everything is made afresh in a temporary folder."""
    if cache is None:
        with tempfile.TemporaryDirectory(prefix="fercore-trial-") as tmp:
            return run(config, data, report, CacheStore(tmp, enabled=False))
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
    synthetic_row: dict[str, Any] = {}
    pool = None
    if plan.synthetic.sum() > 0:
        pool = make_pool(cfg, data, plan.synthetic, cache, device)
        artifacts["samples_png"] = grid_png(pool.grid)
        if pool.embedding:
            artifacts["embedding"] = pool.embedding
        synthetic_row = pool.row
    mixed_x, mixed_y, is_synthetic = mix(train_x, train_y, plan, pool.images if pool else {}, seed=cfg.seed)

    # Train the classifier; validation picks the epoch, the test split is read once at the end.
    t0 = time.perf_counter()
    trainer = _trainer(cfg, (mixed_x, mixed_y), data, device)
    epochs: list[dict[str, float]] = []
    final: dict[str, Any] = {}
    for result in trainer.epochs():
        metrics = {"epoch": result.epoch, **result.metrics}
        epochs.append(metrics)
        if result.last:
            test_x, test_y = data.split("test")
            proba = _test_proba(trainer, test_x, device)
            artifacts["confusion"] = confusion(test_y, proba.argmax(1), num_classes).tolist()
            # The last report carries the whole result: the best epoch's validation metrics, the test metrics of
            # its weights, and the bookkeeping, so a driver can build the row from the report stream alone.
            kept = epochs[trainer.best_epoch - 1] if trainer.best_epoch else metrics
            test_metrics = {**metrics_from_proba(proba, test_y, "test"),
                            **bootstrap_intervals(test_y, proba.argmax(1), "test", num_classes, seed=cfg.seed)}
            final = {
                **{k: v for k, v in kept.items() if k.startswith("val_")},
                **test_metrics,
                "status": "completed", "reason": "",
                "best_epoch": trainer.best_epoch, "epochs_run": len(epochs),
                "n_train_real": int((~is_synthetic).sum()), "n_train_synthetic": int(is_synthetic.sum()),
                **{f"n_train_real_{name}": int(n) for name, n in zip(data.class_names, plan.real)},
                **{f"n_train_synthetic_{name}": int(n) for name, n in zip(data.class_names, plan.synthetic)},
                "generator_seconds": pool.seconds if pool else 0.0, "classifier_seconds": time.perf_counter() - t0,
                "device": str(device), "data_fingerprint": data.fingerprint,
                **synthetic_row,
                # The audit: synthetic images in the final training set, and the data set's own real train images,
                # that nearly copy a test image (fercore.metrics.leakage).
                **leakage_rows(mixed_x[is_synthetic], mixed_x[~is_synthetic], test_x),
                **_paired(cfg, data, device, cache, test_y, proba, test_metrics, pool is not None),
            }
            final["train_seconds"] = time.perf_counter() - started
            # The epoch's own keys keep the last epoch's values (the epochs table stays true); the row, whose val_
            # metrics are the best epoch's, travels whole as an artifact.
            metrics = {**metrics, **{k: v for k, v in final.items() if not k.startswith("val_")}}
            artifacts["row"] = final
        report(result.epoch, metrics, artifacts if result.last else None)
    return TrialResult({**cfg.flat(), **final}, epochs, artifacts)


def _trainer(cfg: TrialConfig, train: tuple[np.ndarray, np.ndarray], data: FaceSet, device: torch.device) -> Trainer:
    # Seeded here, not only at the trial's start: a generator trained in this process (rather than loaded from the
    # cache) draws from the same stream, and the classifier must start alike either way (and like its baseline).
    torch.manual_seed(cfg.seed)
    model = build_classifier(cfg.classifier, data.image_size, len(data.class_names))
    return Trainer(model, train, data.split("val"), cfg.classifier, cfg.train, cfg.seed, device,
                   len(data.class_names))


def _test_proba(trainer: Trainer, test_x: np.ndarray, device: torch.device) -> np.ndarray:
    trainer.restore_best()
    return trainer.predict_proba(torch.from_numpy(test_x).to(device))


def _paired(cfg: TrialConfig, data: FaceSet, device: torch.device, cache: CacheStore, test_y: np.ndarray,
            proba: np.ndarray, test_metrics: dict[str, Any], augmented: bool) -> dict[str, Any]:
    """The real-only baseline of the same backbone, training config and seed, and this trial's uplift over it.

    A real-only trial is its own baseline: it stores its outcome for the augmented trials that pair with it."""
    if not augmented:
        _, _, entry = cached.baseline(cfg, data, cache, lambda: (proba, test_metrics))
        return {"baseline_key": entry.key, "baseline_cache_hit": entry.hit}
    if not cfg.augment.paired_baseline:
        return {}

    def train_baseline() -> tuple[np.ndarray, dict[str, Any]]:
        trainer = _trainer(cfg, data.split("train"), data, device)
        for _ in trainer.epochs():
            pass
        base = _test_proba(trainer, data.split("test")[0], device)
        return base, metrics_from_proba(base, test_y, "test")

    base_proba, _, entry = cached.baseline(cfg, data, cache, train_baseline)
    return {"baseline_key": entry.key, "baseline_cache_hit": entry.hit,
            **uplift_metrics(test_y, base_proba.argmax(1), proba.argmax(1), "test", data.class_names, seed=cfg.seed)}


def grid_png(images: np.ndarray) -> bytes:
    """classes x columns x H x W uint8 -> one PNG with a row per class."""
    from PIL import Image

    rows, cols, h, w = images.shape
    canvas = images.transpose(0, 2, 1, 3).reshape(rows * h, cols * w)
    buf = io.BytesIO()
    Image.fromarray(canvas).save(buf, format="PNG")
    return buf.getvalue()
