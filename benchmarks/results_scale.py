"""What recording one finished trial costs the driver as a sweep grows: add_trial + add_epochs (30) + add_artifacts +
flush of fercore.results.ResultsStore, timed trial by trial around the 10th and the last (10,000th) trial, and the
driver's memory growth per trial.

Rows are of today's width, modelled on what fercore/trial.py and fercore/synthetic.py produce for an augmented trial:
52 config keys and about 170 figures (per-class val/test figures and intervals, n_train per class, gen_* quality per
class, uplift per class, leakage, bookkeeping), 30 epochs of 33 figures, a 7 x 7 confusion matrix and 1,400
embedding points (100 per class and source). Between the two timed windows trials are recorded with a flush every
--batch trials (the store then really holds every trial, only fewer flushes are timed). After the last window the
folder is read back by pyarrow (through the manifest, mid-sweep) and compacted, as the end of a sweep does.

    python benchmarks/results_scale.py                  # 10,000 trials, about 2 minutes on 2 CPU cores
    python benchmarks/results_scale.py --trials 300     # run from another fercore (PYTHONPATH) to compare stores

Prints one line per window, then as its LAST line a JSON object: append_ms_at_10 and append_ms_at_<trials> (median
per-trial wall-clock cost in the two windows of 19 trials) and their ratio, the same in CPU time (append_cpu_ms_...),
driver_kb_per_trial (the slope of the process's resident memory over the second half of the run), read_s (pyarrow
reading trials.parquet's committed parts), compact_s and compact_peak_rss_mb (fercore.results.compact at the end, in
a process of its own: its time and peak resident memory), embedding_rows and peak_rss_mb.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from fercore import results
from fercore.labels import CLASSES

EPOCHS = 30
POINTS_PER_CLASS_AND_SOURCE = 100
GENERATORS = 20  # distinct generators among the trials; a trial reuses one from the cache after its first build
WINDOW = 9  # trials timed either side of the 10th (1-19), and the 19 before the last
COMPACT_IN_A_PROCESS = ("import resource, sys, time\n"
                        "from fercore import results\n"
                        "start = time.perf_counter()\n"
                        "results.compact(sys.argv[1])\n"
                        "print(time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n")


def config(i: int, rng: np.random.Generator) -> dict:
    return {
        "seed": 0, "data.source": "procedural", "data.scale": 0.1, "data.seed": 0, "data.image_size": 48,
        "data.val_fraction": 0.1, "generator.type": "cgan", "generator.epochs": 3, "generator.batch_size": 64,
        "generator.lr_g": float(rng.uniform(1e-4, 1e-3)), "generator.lr_d": 2e-4, "generator.beta1": 0.5,
        "generator.beta2": 0.999, "generator.d_steps": 1, "generator.augment": "none", "generator.ada_target": 0.6,
        "generator.ada_kimg": 10.0, "generator.ema": 0.0, "generator.collapse_steps": 200,
        "generator.latent_dim": 100, "generator.width": 8, "generator.resolution": 32, "generator.conditioning": "mask",
        "augment.policy": "real_ratio", "augment.real_ratio": float(rng.uniform()), "augment.filter": "none",
        "augment.filter_tau": 0.5, "augment.filter_rounds": 5, "augment.paired_baseline": True,
        "classifier.backbone": ["cnn3", "resnet18"][i % 2], "classifier.lr": float(rng.uniform(1e-4, 1e-2)),
        "classifier.epochs": EPOCHS, "classifier.batch_size": 64, "classifier.weight_decay": 0.0,
        "classifier.dropout": 0.5, "classifier.optimizer": "adam", "classifier.momentum": 0.9,
        "classifier.schedule": "none", "classifier.label_smoothing": 0.0, "classifier.class_weights": False,
        "classifier.patience": 0, "classifier.early_stop": "val_macro_f1", "classifier.width": 8,
        "classifier.weights": "", "train.flip": 0.5, "train.translate": 2, "train.rotate": 0.0, "train.crop": 0.0,
        "train.erase": 0.0, "train.compile": False, "train.device": "auto", "train.threads": 0}


def split_figures(split: str, rng: np.random.Generator) -> dict:
    out = {f"{split}_{m}": float(rng.uniform()) for m in ("loss", "accuracy", "balanced_accuracy", "macro_f1",
                                                           "weighted_f1", "auroc")}
    for c in CLASSES:
        out |= {f"{split}_{m}_{c}": float(rng.uniform()) for m in ("precision", "recall", "f1")}
    return out


def trial_row(i: int, rng: np.random.Generator) -> dict:
    generator = i % GENERATORS
    row = {"trial_id": f"5f3a1_{i:05d}", **config(i, rng), **split_figures("val", rng), **split_figures("test", rng)}
    row |= {f"test_{m}_ci_{e}": float(rng.uniform()) for m in ("accuracy", "macro_f1") for e in ("low", "high")}
    row |= {f"test_recall_{c}_ci_{e}": float(rng.uniform()) for c in CLASSES for e in ("low", "high")}
    row |= {"status": "completed", "reason": "", "best_epoch": int(rng.integers(1, EPOCHS)), "epochs_run": EPOCHS,
            "n_train_real": 2000, "n_train_synthetic": 900}
    row |= {f"n_train_real_{c}": 300 for c in CLASSES} | {f"n_train_synthetic_{c}": 130 for c in CLASSES}
    row |= {"generator_key": f"generator-v1-{generator:016x}", "generator_cache_hit": i >= GENERATORS,
            "pool_key": f"pool-v1-{i:016x}", "pool_cache_hit": False, "gen_fid": float(rng.uniform(10, 90)),
            "gen_conditional_accuracy": float(rng.uniform()), "gen_embedding_jsd": float(rng.uniform()),
            "filter_acceptance": 1.0, "filter_generated": 900}
    row |= {f"gen_fid_{c}": float(rng.uniform(10, 90)) for c in CLASSES}
    row |= {f"gen_embedding_jsd_{c}": float(rng.uniform()) for c in CLASSES}
    row |= {f"filter_acceptance_{c}": 1.0 for c in CLASSES}
    row |= {"uplift_test_accuracy": float(rng.normal(0, .02)), "uplift_test_macro_f1": float(rng.normal(0, .02)),
            "uplift_test_macro_f1_low": -0.03, "uplift_test_macro_f1_high": 0.03}
    row |= {f"uplift_test_recall_{c}": float(rng.normal(0, .05)) for c in CLASSES}
    row |= {"generator_seconds": 30.0, "classifier_seconds": 60.0, "device": "cpu", "data_fingerprint": "e197e167",
            "leak_synthetic_test": 0, "leak_real_test": 0, "baseline_key": f"baseline-v1-{i % 2:016x}",
            "baseline_cache_hit": i >= 2, "train_seconds": 95.0, "node_ip": "10.0.0.2", "node_id": "e853e6e7" * 7,
            "attempts": 1}
    return row


def epoch_metrics(epoch: int, rng: np.random.Generator) -> dict:
    metrics = {"epoch": epoch, "train_loss": float(rng.uniform()), "lr": 1e-3, **split_figures("val", rng)}
    return metrics | {"node_id": "e853e6e7" * 7, "node_ip": "10.0.0.2"}


def artifacts(rng: np.random.Generator) -> dict:
    n = POINTS_PER_CLASS_AND_SOURCE * len(CLASSES) * 2
    labels = np.tile(np.repeat(np.arange(len(CLASSES)), POINTS_PER_CLASS_AND_SOURCE), 2)
    return {"confusion": rng.integers(0, 50, (len(CLASSES), len(CLASSES))),
            "embedding": {"source": np.repeat([0, 1], n // 2), "label": labels,
                          "x": rng.normal(size=n).astype(np.float32), "y": rng.normal(size=n).astype(np.float32)}}


def record(store, i: int, rng: np.random.Generator, flush: bool) -> tuple[float, float]:
    """Record trial I (its rows made beforehand, untimed); the seconds the store took, and its CPU seconds (on a
    shared machine the wall clock also counts other processes)."""
    row, epochs, art = trial_row(i, rng), [epoch_metrics(e, rng) for e in range(1, EPOCHS + 1)], artifacts(rng)
    start, cpu = time.perf_counter(), time.process_time()
    trial_id = row["trial_id"]
    store.add_epochs(trial_id, epochs)
    store.add_trial(row)
    store.add_artifacts(trial_id, art)
    if flush:
        store.flush()
    return time.perf_counter() - start, time.process_time() - cpu


def median_ms(times: list[tuple[float, float]], cpu: bool = False) -> float:
    return 1000 * statistics.median(t[cpu] for t in times)


def rss_kb() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1024
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=10_000, help="trials the store holds at the end")
    parser.add_argument("--batch", type=int, default=50, help="trials per flush between the timed windows")
    parser.add_argument("--folder", default=None, help="results folder (default: a temporary one, removed)")
    args = parser.parse_args()
    n = args.trials
    assert n >= 4 * WINDOW + 10, f"--trials: at least {4 * WINDOW + 10}"
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.folder or tmp)
        store = results.ResultsStore(folder)
        early, late, memory = [], [], []
        started = time.perf_counter()
        for i in range(1, n + 1):
            timed = 10 - WINDOW <= i <= 10 + WINDOW or i > n - 2 * WINDOW - 1
            seconds = record(store, i, rng, flush=timed or i % args.batch == 0 or i == n)
            if timed:
                (early if i <= 10 + WINDOW else late).append(seconds)
            if i >= n // 2 and i % max(1, n // 20) == 0:
                memory.append((i, rss_kb()))
            if i in (10 + WINDOW, n):
                times = early if i < n else late
                print(f"trials {i - len(times) + 1}-{i}: median {median_ms(times):.1f} ms per trial, "
                      f"{median_ms(times, cpu=True):.1f} ms of CPU ({time.perf_counter() - started:.0f} s so far)",
                      flush=True)
        assert len(store.trial_ids()) == n
        slope = np.polyfit(*zip(*memory), 1)[0] if len(memory) > 1 else float("nan")
        start = time.perf_counter()
        # Mid-sweep through the manifest where the store keeps one (a reader of the folder would count parts a commit
        # dropped and that wait out their grace period); a store from before manifests: the folder itself.
        read = (results.read_table(folder, results.TRIALS) if hasattr(results, "read_table")
                else pq.read_table(folder / results.TRIALS))
        read_s = time.perf_counter() - start
        assert read.num_rows == n, read.num_rows
        # The end-of-sweep merge in a process of its own, as `fersweep run` ends: its time and its peak memory, the
        # largest table being embeddings (10,000 trials x 1,400 points: 14 million rows).
        merge = subprocess.run([sys.executable, "-c", COMPACT_IN_A_PROCESS, str(folder)], check=True,
                               capture_output=True, text=True)
        compact_s, compact_peak_kb = map(float, merge.stdout.split())
        assert pq.read_table(folder / results.EMBEDDINGS).num_rows == n * 2 * len(CLASSES) * POINTS_PER_CLASS_AND_SOURCE
        early_ms, late_ms = median_ms(early), median_ms(late)
        print(json.dumps({"trials": n, "append_ms_at_10": round(early_ms, 2), f"append_ms_at_{n}": round(late_ms, 2),
                          "ratio": round(late_ms / early_ms, 2),
                          "append_cpu_ms_at_10": round(median_ms(early, cpu=True), 2),
                          f"append_cpu_ms_at_{n}": round(median_ms(late, cpu=True), 2),
                          "driver_kb_per_trial": round(float(slope), 1),
                          "read_s": round(read_s, 3), "compact_s": round(compact_s, 2),
                          "compact_peak_rss_mb": round(compact_peak_kb / 1024),
                          "embedding_rows": n * 2 * len(CLASSES) * POINTS_PER_CLASS_AND_SOURCE,
                          "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                          "store": results.__file__}))


if __name__ == "__main__":
    main()
