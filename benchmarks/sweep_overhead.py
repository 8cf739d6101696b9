"""The sweep layer's own cost: a sweep of trials that do nothing (one report each), run through fercore's real
sweep path (OptunaSearch, the results callback writing Parquet and TensorBoard, the cache), on a local Ray instance.

Prints, with worker processes reused between trials (the default) and with a fresh one per trial (Ray's default,
measured in the same run as the baseline), the wall time per trial (the layer's overhead: scheduling, the
searcher, result handling, table rewrites) and the driver's memory growth per trial, as the slope of its resident memory against finished trials after the
first 20 (Ray users have reported about 300 KB per trial; the aim here is under 100 KB).

Usage: python benchmarks/sweep_overhead.py [--trials 200] [--concurrent 2]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import yaml


def noop_trial(config, data=None, cache=None, objectives=(), finished=None, inbox=None):
    """A trial that does nothing: one result with the sweep's metric, as a real trial's first epoch would."""
    from ray import tune

    tune.report({"epoch": 1, "val_macro_f1": float(config.get("classifier.lr", 0.0))})


def rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def write_sweep(root: Path, trials: int, concurrent: int) -> Path:
    (root / "search_spaces").mkdir()
    (root / "search_spaces" / "lr.py").write_text(
        "def space(trial):\n    trial.suggest_float('classifier.lr', 1e-4, 1e-2, log=True)\n")
    (root / "sweeps").mkdir()
    sweep = {"name": "overhead", "data": {"source": "procedural", "scale": 0.01}, "space": "lr",
             "fixed": {"augment.policy": "none", "classifier.backbone": "linear"}, "sampler": "tpe",
             "scheduler": {"type": "none"}, "num_samples": trials, "max_concurrent": concurrent,
             "resources": {"cpu": 1}}
    path = root / "sweeps" / "overhead.yaml"
    path.write_text(yaml.safe_dump(sweep))
    return path


def measure(trials: int, concurrent: int, reuse: bool) -> tuple[int, float, float, float, float]:
    """One no-op sweep: (trials, wall seconds, driver RSS at start and peak in KB, KB per trial after trial 20)."""
    import ray

    from fercore.sweep.run import run_sweep
    from fercore.sweep.spec import load_sweep

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        spec = load_sweep(write_sweep(root, trials, concurrent))
        ray.init(num_cpus=concurrent, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
        samples: list[tuple[int, int]] = []  # (trials that reported, driver RSS in KB)
        done = threading.Event()
        out = root / "results" / "overhead"

        def watch() -> None:
            while not done.is_set():
                # Trials that reported (each has its TensorBoard folder): counted without reading the tables, which
                # would grow this process's own memory.
                n = len(os.listdir(out / "tb")) if (out / "tb").is_dir() else 0
                samples.append((n, rss_kb()))
                done.wait(0.2)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        t0 = time.perf_counter()
        run_sweep(spec, root / "results", trainable=noop_trial, reuse_actors=reuse)
        seconds = time.perf_counter() - t0
        done.set()
        watcher.join()
        ray.shutdown()
    n, kb = np.array(samples, dtype=float).T
    late = n >= 20
    slope = np.polyfit(n[late], kb[late], 1)[0] if late.sum() > 2 and np.ptp(n[late]) > 0 else float("nan")
    return trials, seconds, kb[0], kb.max(), slope


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=200)
    p.add_argument("--concurrent", type=int, default=2)
    p.add_argument("--baseline-trials", type=int, default=50, help="trials of the fresh-worker comparison run")
    args = p.parse_args()
    runs = [("worker reused (fercore's default)", True, args.trials),
            ("fresh worker per trial", False, args.baseline_trials)]
    results = {}
    for name, reuse, trials in runs:
        print(f"{name}: {trials} trials ...", flush=True)
        results[name] = measure(trials, args.concurrent, reuse)
    print(f"\nno-op trials, {args.concurrent} at a time, on {os.cpu_count()} CPU cores")
    for name, (trials, seconds, start_kb, peak_kb, slope) in results.items():
        print(f"{name}: {trials} trials in {seconds:.1f} s = {seconds / trials * 1000:.0f} ms per trial "
              f"({trials / seconds * 3600:.0f} trials per hour); driver memory {start_kb / 1024:.0f} MB at start, "
              f"{peak_kb / 1024:.0f} MB peak, growth {slope:.1f} KB per trial (slope after trial 20)")
    (_, fast, *_), (_, slow, *_) = results.values()
    per_fast = fast / args.trials
    per_slow = slow / args.baseline_trials
    print(f"per-trial overhead, fresh worker / reused: {per_slow / per_fast:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
