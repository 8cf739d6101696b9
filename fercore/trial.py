"""One trial, end to end, without Ray, in one direction:

    config -> generator (training split only, cached) -> filtered synthetic pool -> mix
    -> classifier trained on the device, each epoch reported as it ends -> the best epoch restored
    -> one read of the test split -> its metrics -> leakage audit (and memorisation, with a generator)
    -> paired comparisons -> one result row,
    sent with the last epoch's report.

The paired comparisons (PAIRED), each a classifier of the trial's own classifier and training config and seed,
trained once per content key (fercore.cache.entries) and read on the same test images:
- the real-only baseline (`uplift_*`): what the trial's whole recipe buys over the real training set;
- the oversampling control (`control_*`, `gain_control_*`), for a trial that trains on synthetic images: the same
  counts per class and schedule, each synthetic image replaced by a real image of its class drawn again (from the
  real images the trial kept) under the same batch transforms. It holds steps per epoch and class balance fixed, so
  the gain over it is what the synthetic images' content adds;
- the real-subset control (`subset_*`, `gain_subset_*`), for a trial that drops real images (real_ratio): the real
  images it kept, alone. The generator saw every real training image, so the synthetic images also carry what the
  dropped ones hold.

`run()` is called by the sweep layer (which adapts `report` to Ray Tune) and by `fersweep trial` (which logs it).
"""
from __future__ import annotations

import io
import math
import tempfile
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping

import numpy as np
import torch

from fercore.augment.policies import MixPlan, kept_real, mix, plan_mix
from fercore.cache import CacheStore, entries
from fercore.cache.dedupe import dedupe
from fercore.cache.split_copies import split_copies
from fercore.cache.split_hashes import split_index
from fercore.classifiers import build_classifier
from fercore.config import TrialConfig, resolve
from fercore.data import FaceSet
from fercore.errors import ConfigError
from fercore.metrics import Read, calc_metric, calc_metrics, confusion
from fercore.synthetic import SyntheticPool, make_pool
from fercore.train import Trainer, deterministic_algorithms, pick_device, steps_per_epoch

# report(epoch, metrics, artifacts): metrics are flat scalars; artifacts (only with the last epoch) hold the
# trial's whole result row (config keys included, as TrialResult.row), the confusion matrix, the per-image test
# predictions (with those of the baseline and controls it was compared against), a PNG grid of synthetic samples per
# class and the projected real and synthetic points of its embedding figure.
Report = Callable[[int, dict[str, float], "dict[str, Any] | None"], None]

TEST_METRICS = ("classification", "bootstrap")  # fercore.metrics names, measured on the one read of the test split


@dataclass
class TrialResult:
    row: dict[str, Any]  # every config key, then metrics, then bookkeeping: one row of trials.parquet
    epochs: list[dict[str, float]] = field(default_factory=list)
    artifacts: dict[str, Any] = field(default_factory=dict)
    test: Read | None = None  # the one read of the test split: per-image labels and class probabilities
    predictions: dict[str, Any] = field(default_factory=dict)  # as artifacts["predictions"]


@dataclass(frozen=True)
class Outcome:
    """What a paired comparison is given: the trial, where it ran, its training plan and its read of the test split."""

    cfg: TrialConfig
    data: FaceSet
    device: torch.device
    cache: CacheStore
    test: Read
    test_metrics: dict[str, Any]
    plan: MixPlan  # the trial's training counts per class
    counts: np.ndarray  # the real training split's counts per class
    steps: int = 0  # the optimiser steps the trial's classifier took
    spent: list[float] = field(default_factory=list)  # seconds each comparison trained here (none on cache hits)
    # The test-set class probabilities of each model the trial was compared against ("baseline", "control",
    # "subset"), trained here or read from the cache: stored with the trial's own predictions.
    compared: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def real_only(self) -> bool:
        """The trial trained on the real training split exactly as it is: it is its own real-only baseline."""
        return not self.plan.synthetic.any() and not self.plan.duplicate.any() and (self.plan.real == self.counts).all()


def _print_report(epoch: int, metrics: dict[str, float], artifacts: dict | None) -> None:
    keys = ("train_loss", "val_loss", "val_accuracy", "val_macro_f1")
    print(f"epoch {epoch:3d}  " + "  ".join(f"{k}={metrics[k]:.4f}" for k in keys if k in metrics), flush=True)


def run(config: Mapping[str, Any] | TrialConfig, data: FaceSet, report: Report = _print_report,
        cache: CacheStore | None = None) -> TrialResult:
    """CACHE holds trained generators, synthetic pools, the reference classifier, baselines and controls (a sweep
    passes one under its storage); without one, everything is made afresh in a temporary folder."""
    started = time.perf_counter()
    if cache is None:
        with tempfile.TemporaryDirectory(prefix="fercore-trial-") as tmp:
            return run(config, data, report, CacheStore(tmp, enabled=False))
    cfg = config if isinstance(config, TrialConfig) else resolve(config)
    if cfg.data.image_size != data.image_size:
        raise ConfigError(f"data.image_size: config says {cfg.data.image_size} but the data set has "
                          f"{data.image_size}x{data.image_size} images")
    data = select_fold(cfg, data)
    if cfg.data.channels != data.channels:
        raise ConfigError(f"data.channels: config says {cfg.data.channels} but the data set's images have "
                          f"{data.channels} channel{'s' if data.channels != 1 else ''} "
                          f"({'colour' if data.channels == 3 else 'gray'}); read it with data.channels "
                          f"{cfg.data.channels} or set data.channels to {data.channels}")
    # The data set's own cross-split near-copies are dropped (data.dedupe) before anything, generators included,
    # sees the training split; the trial's data set is then the deduplicated one, with its own fingerprint.
    data, removed = dedupe(data, cfg.data.dedupe, cache)
    with deterministic_algorithms(cfg.train.deterministic):
        return _run(cfg, data, report, cache, removed, started)


def select_fold(cfg: TrialConfig, data: FaceSet) -> FaceSet:
    """The data set the trial runs on: with k-fold (data.folds), fold data.fold of DATA (its own splits and
    fingerprint, so cache entries never mix folds); DATA itself otherwise."""
    folds, fold = cfg.data.folds, cfg.data.fold
    if data.n_folds != folds:
        raise ConfigError(f"data.folds: config says {folds} but the data set was read with "
                          f"{data.n_folds or 'no'} folds")
    if not folds:
        return data
    if not 0 <= fold < folds:
        raise ConfigError(f"data.fold: {fold} is out of range for data.folds {folds}; expected 0..{folds - 1}")
    return data.for_fold(fold)


def _run(cfg: TrialConfig, data: FaceSet, report: Report, cache: CacheStore, removed: dict[str, int],
         started: float) -> TrialResult:
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    torch.manual_seed(cfg.seed)
    device = pick_device(cfg.train.device)

    # Mix: the generator sees the training split only; validation and test images never reach it.
    plan, pool, (mixed_x, mixed_y, is_synthetic) = _mix(cfg, data, cache, device)

    # Train; validation picks the epoch. Every epoch is reported as it ends, but the last: its report carries the row.
    t0 = time.perf_counter()
    trainer = _trainer(cfg, (mixed_x, mixed_y), data, device)
    epochs = _train(trainer, report)
    classifier_seconds = time.perf_counter() - t0  # the classifier's own training, nothing before or after it

    # Restore the best epoch and read the test split, once.
    test_x, test_y = data.split("test")
    test = Read("test", test_y, _predict_best(trainer, test_x, device), data.class_names, cfg.seed)
    test_metrics = calc_metrics(TEST_METRICS, read=test)

    # The audit: synthetic images in the final training set, and the data set's own real train images the trial
    # kept (first in the mixed set; their duplicates are not counted again), that nearly copy a test or validation
    # image under flips, shifts, tone changes, small rotations and crops (fercore.metrics.copies). The splits' hashes,
    # and which training images copy a test or validation image, are found once per data set and kept in the cache
    # (fercore.cache.split_hashes, split_copies): a trial hashes only its synthetic images.
    # A trial with a generator also measures memorisation (gen_memorised_share): the share of its synthetic images
    # that nearly copy a training image, against the training split's index (built once per data set, like the others).
    # And it counts, apart from copies, the images whose reference-classifier features nearly equal a test or
    # validation image's (leak_feature_*; a trial without a generator has no reference to ask).
    test_index, val_index = (split_index(data, split, cache) for split in ("test", "val"))
    train_index = split_index(data, "train", cache) if pool is not None else None
    kept = kept_real(data.split("train")[1], plan, cfg.seed)
    own = split_copies(data, cache)
    real_copies = {"test": own["train_test"][kept], "val": own["train_val"][kept]}
    neighbours = {"features": pool.features, "test_images": test_x, "val_images": data.split("val")[0]} \
        if pool is not None and pool.features is not None else {}
    leakage = calc_metric("leakage", synthetic=mixed_x[is_synthetic], real=mixed_x[:len(kept)], test=test_index,
                          val=val_index, train=train_index, real_copies=real_copies, **neighbours)

    # Paired comparisons: each step trains or fetches what this trial is compared against.
    counts = np.bincount(data.split("train")[1], minlength=len(data.class_names))
    outcome = Outcome(cfg, data, device, cache, test, test_metrics, plan, counts, steps=trainer.steps)
    paired = {key: value for step in PAIRED for key, value in step(outcome).items()}

    last = epochs[-1]
    kept = epochs[trainer.best_epoch - 1] if trainer.best_epoch else last
    final = {
        **{k: v for k, v in kept.items() if k.startswith("val_")},  # the best epoch's, whose weights were tested
        **test_metrics,
        "status": "completed", "reason": "", "best_epoch": trainer.best_epoch, "epochs_run": len(epochs),
        "train_steps": trainer.steps,
        **_training_counts(data.class_names, plan),
        "classifier_seconds": classifier_seconds,
        # From the trial's start (its data set in hand) to its classifier's first step: dedupe, generator, mix.
        "setup_seconds": t0 - started,
        "generator_seconds": pool.generator_seconds if pool else 0.0,
        "synthetic_seconds": pool.seconds if pool else 0.0,
        "paired_seconds": sum(outcome.spent),
        "device": str(device), "data_fingerprint": data.fingerprint,
        "classes": ",".join(data.class_names),  # what the per-class keys and the artifacts' class ids name
        **(pool.row if pool else {}),
        **leakage,
        **removed,
        **paired,
    }
    final["train_seconds"] = time.perf_counter() - started
    row = {**cfg.flat(applicable_only=True), **final}  # keys the trial did not use are there, empty
    predictions = _predictions(test, data.split_ids("test"), outcome.compared)
    artifacts = _artifacts(pool, test, row, predictions)
    # The last epoch's own keys keep its values (the epochs table stays true); the row, whose val_ metrics are the
    # best epoch's, travels whole as an artifact, so a driver can record the trial from the report stream alone.
    report(last["epoch"], {**last, **{k: v for k, v in final.items() if not k.startswith("val_")}}, artifacts)
    return TrialResult(row, epochs, artifacts, test, predictions)


def _mix(cfg: TrialConfig, data: FaceSet, cache: CacheStore, device: torch.device
         ) -> tuple[MixPlan, SyntheticPool | None, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The policy's plan, the synthetic pool it needs (None when it needs none), and the mixed training set:
    images, labels and an is_synthetic flag per image."""
    train_x, train_y = data.split("train")
    plan = plan_mix(cfg.augment.policy, np.bincount(train_y, minlength=len(data.class_names)),
                    dict(cfg.augment.values), data.class_names)
    pool = make_pool(cfg, data, plan.synthetic, cache, device) if plan.synthetic.sum() > 0 else None
    return plan, pool, mix(train_x, train_y, plan, pool.images if pool else {}, seed=cfg.seed)


def _training_counts(class_names: tuple[str, ...], plan: MixPlan) -> dict[str, int]:
    counts = {"n_train_real": int(plan.real.sum()), "n_train_synthetic": int(plan.synthetic.sum()),
              "n_train_duplicate": int(plan.duplicate.sum()),
              **{f"n_train_real_{name}": int(n) for name, n in zip(class_names, plan.real)},
              **{f"n_train_synthetic_{name}": int(n) for name, n in zip(class_names, plan.synthetic)}}
    if plan.duplicate.any():  # real images drawn again (oversample_*): per class only where there are some
        counts |= {f"n_train_duplicate_{name}": int(n) for name, n in zip(class_names, plan.duplicate)}
    return counts


def _predictions(test: Read, face_ids: np.ndarray, compared: Mapping[str, np.ndarray] | None = None
                 ) -> dict[str, Any]:
    """Per-image test predictions, so any two trials can be compared paired after the fact: each image's index in
    the test split and its data-set-wide id (FACE_IDS: the same face in every fold and trial has the same id, so
    k-fold trials pair and resample by face, not by position in their fold's test split), its true and predicted
    class ids and every class's probability; and under "paired", those of
    each model the trial was compared against (COMPARED: name -> class probabilities on the same test images), so
    the report resamples the test images for its uplift and gains too."""
    paired = {name: {"predicted": proba.argmax(1).astype(np.int64), "proba": np.asarray(proba, dtype=np.float32)}
              for name, proba in (compared or {}).items()}
    return {"index": np.arange(len(test.labels), dtype=np.int64), "face_id": np.asarray(face_ids, dtype=np.int64),
            "true": np.asarray(test.labels, dtype=np.int64),
            "predicted": test.predicted.astype(np.int64), "proba": test.proba.astype(np.float32), "paired": paired}


def _artifacts(pool: SyntheticPool | None, test: Read, row: dict[str, Any],
               predictions: dict[str, Any]) -> dict[str, Any]:
    """What the last report carries besides its metrics: the sample grid and embedding points of the synthetic
    pool, the test confusion matrix and predictions, and the whole result row."""
    artifacts: dict[str, Any] = {}
    if pool is not None:
        artifacts["samples_png"] = grid_png(pool.grid)
        if pool.embedding:
            artifacts["embedding"] = pool.embedding
    artifacts["classes"] = list(test.class_names)  # the data set's, which the class ids below index
    artifacts["confusion"] = confusion(test.labels, test.predicted, len(test.class_names)).tolist()
    artifacts["predictions"] = predictions
    artifacts["row"] = row
    return artifacts


def _train(trainer: Trainer, report: Report) -> list[dict[str, float]]:
    """Every epoch's metrics; each epoch is reported as it ends, except the last, whose report waits for the row."""
    epochs: list[dict[str, float]] = []
    for result in trainer.epochs():
        epochs.append({"epoch": result.epoch, **result.metrics})
        if not result.last:
            report(result.epoch, epochs[-1], None)
    return epochs


def _trainer(cfg: TrialConfig, train: tuple[np.ndarray, np.ndarray], data: FaceSet, device: torch.device) -> Trainer:
    # Seeded here, not only at the trial's start: a generator trained in this process (rather than loaded from the
    # cache) draws from the same stream, and the classifier must start alike either way (and like its baseline).
    torch.manual_seed(cfg.seed)
    model = build_classifier(cfg.classifier, data.image_size, len(data.class_names), data.channels)
    return Trainer(model, train, data.split("val"), cfg.classifier, cfg.train, cfg.seed, device,
                   len(data.class_names), class_names=data.class_names)


def _predict_best(trainer: Trainer, images: np.ndarray, device: torch.device) -> np.ndarray:
    """Class probabilities of IMAGES by the weights of the best validation epoch."""
    trainer.restore_best()
    return trainer.predict_proba(torch.from_numpy(images).to(device))


def _train_and_read(o: Outcome, train: tuple[np.ndarray, np.ndarray], cfg: TrialConfig | None = None
                    ) -> tuple[Read, int]:
    """A classifier of CFG (the trial's config by default) and the trial's seed trained on TRAIN, read on the same
    test images as the trial; and the optimiser steps it took."""
    t0 = time.perf_counter()
    trainer = _trainer(cfg or o.cfg, train, o.data, o.device)
    for _ in trainer.epochs():
        pass
    read = replace(o.test, proba=_predict_best(trainer, o.data.split("test")[0], o.device))
    o.spent.append(time.perf_counter() - t0)
    return read, trainer.steps


def _trained_on(o: Outcome, plan: MixPlan, cfg: TrialConfig | None = None) -> Callable[[], entries.Outcome]:
    """What makes a compared classifier: trained on the real training images PLAN keeps (and draws again), with the
    trial's mixing seed, so it keeps the very images the trial kept; CFG: another classifier budget than the
    trial's (the real subset's, in steps). Its metrics hold the optimiser steps it took (train_steps)."""
    def make() -> entries.Outcome:
        x, y, _ = mix(*o.data.split("train"), plan, {}, seed=o.cfg.seed)
        read, steps = _train_and_read(o, (x, y), cfg)
        return read.proba, {**calc_metric("classification", read=read), "train_steps": steps}
    return make


def _own_outcome(o: Outcome) -> entries.Outcome:
    """The trial's own outcome, stored for the trials it is the baseline or control of."""
    return o.test.proba, {**o.test_metrics, "train_steps": o.steps}


def _figures(name: str, metrics: dict[str, Any]) -> dict[str, Any]:
    """A compared classifier's own test figures as NAME_test_... row keys: accuracy, macro-F1, recall per class; and
    its optimiser steps, NAME_train_steps (None for an entry stored before they were counted)."""
    return {f"{name}_{k}": v for k, v in metrics.items()
            if k in ("test_accuracy", "test_macro_f1") or k.startswith("test_recall_")} \
        | {f"{name}_train_steps": metrics.get("train_steps")}


def step_matched(cfg: TrialConfig, trial_images: int, images: int) -> TrialConfig:
    """CFG with its classifier's epochs (and patience) stretched so that IMAGES training images get the optimiser
    steps TRIAL_IMAGES get in the trial: a real subset of a tenth of the images trains ten times the epochs, not a
    tenth of the steps (which would make the trial's gain over it a gain of training longer)."""
    bs = cfg.classifier.batch_size
    factor = steps_per_epoch(trial_images, bs) / steps_per_epoch(images, bs)
    epochs = min(1000, math.ceil(cfg.classifier.epochs * factor - 1e-9))
    patience = min(1000, math.ceil(cfg.classifier.patience * factor - 1e-9))
    return resolve({**cfg.flat(), "classifier.epochs": epochs, "classifier.patience": patience},
                   drop_inapplicable=True)


def paired_baseline(o: Outcome) -> dict[str, Any]:
    """The real-only baseline of the same backbone, training config and seed, and this trial's uplift over it.

    A real-only trial is its own baseline: it stores its outcome for the trials that pair with it."""
    if o.real_only:
        _, _, entry = entries.baseline(o.cfg, o.data, o.cache, o.device, lambda: _own_outcome(o))
        return {"baseline_key": entry.key, "baseline_cache_hit": entry.hit}
    if not o.cfg.augment.paired_baseline:
        return {}
    real = MixPlan(o.counts, np.zeros_like(o.counts))
    base_proba, base_metrics, entry = entries.baseline(o.cfg, o.data, o.cache, o.device, _trained_on(o, real))
    o.compared["baseline"] = base_proba
    return {"baseline_key": entry.key, "baseline_cache_hit": entry.hit,
            "baseline_train_steps": base_metrics.get("train_steps"),
            **calc_metric("uplift", read=o.test, baseline=base_proba)}


def paired_control(o: Outcome) -> dict[str, Any]:
    """The oversampling control of a trial that trains on synthetic images, and the trial's gain over it.

    An oversample_* trial is the control of every trial with its counts: it stores its outcome under that key."""
    plan = o.plan
    if not plan.synthetic.any():
        if not plan.duplicate.any():
            return {}
        key, parts = entries.control_key(o.cfg, o.data, o.device, plan.real, plan.total)
        _, _, entry = entries.compared(key, parts, o.cache, lambda: _own_outcome(o))
        return {"control_key": entry.key, "control_cache_hit": entry.hit}
    drawn = plan.synthetic + plan.duplicate
    if not o.cfg.augment.paired_baseline or (drawn[plan.real == 0] > 0).any():
        return {}  # not asked for, or a class with synthetic images has no real image kept to draw again
    control = MixPlan(plan.real, np.zeros_like(drawn), drawn)
    key, parts = entries.control_key(o.cfg, o.data, o.device, control.real, control.total)
    proba, metrics, entry = entries.compared(key, parts, o.cache, _trained_on(o, control))
    o.compared["control"] = proba
    return {"control_key": entry.key, "control_cache_hit": entry.hit, **_figures("control", metrics),
            **calc_metric("uplift", read=o.test, baseline=proba, prefix="gain_control")}


def paired_subset(o: Outcome) -> dict[str, Any]:
    """The real-subset control of a trial that trains on synthetic images and drops real ones (real_ratio): the real
    images it kept, alone, trained for as many optimiser steps as the trial (step_matched); and the trial's gain
    over it."""
    plan = o.plan
    if not plan.synthetic.any() or not o.cfg.augment.paired_baseline or (plan.real == o.counts).all() \
            or not plan.real.any():
        return {}
    subset = MixPlan(plan.real, np.zeros_like(plan.real))
    cfg = step_matched(o.cfg, int(plan.total.sum()), int(subset.total.sum()))
    key, parts = entries.subset_key(cfg, o.data, o.device, plan.real)
    proba, metrics, entry = entries.compared(key, parts, o.cache, _trained_on(o, subset, cfg))
    o.compared["subset"] = proba
    return {"subset_key": entry.key, "subset_cache_hit": entry.hit, **_figures("subset", metrics),
            **calc_metric("uplift", read=o.test, baseline=proba, prefix="gain_subset")}


# The paired comparisons, in row order: each step gets the trial's Outcome and returns its row keys.
PAIRED: tuple[Callable[[Outcome], dict[str, Any]], ...] = (paired_baseline, paired_control, paired_subset)


def grid_png(images: np.ndarray) -> bytes:
    """classes x columns x H x W (x 3 for colour) uint8 -> one PNG (gray or RGB) with a row per class."""
    from PIL import Image

    rows, cols, h, w = images.shape[:4]
    canvas = images.swapaxes(1, 2).reshape(rows * h, cols * w, *images.shape[4:])
    buf = io.BytesIO()
    Image.fromarray(canvas).save(buf, format="PNG")
    return buf.getvalue()
