"""What the sweep driver costs per trial as a sweep grows: the real driver (fercore.sweep.run_sweep: Ray Tune's loop,
the Optuna searcher, the results callback writing Parquet and TensorBoard, Ray's experiment state and fercore's copy
of it) running trials that train nothing but report today's full payload through fercore's own reporter:

- 30 epochs of validation figures (33 numbers each);
- a last report whose artifacts hold a row of ~200 keys, a 7 x 7 confusion matrix, 1,400 embedding points (100 per
  class and source), a PNG grid of synthetic samples, and predictions of the test split (3,589 faces by default) for
  the trial and its three compared models (baseline, control, subset).

Trials run --concurrent at a time. The driver's time per trial is taken from the wall clock between trials finishing
(a window of 200 trials around trial 100 and the last 200), its memory from /proc/self/status.

    python benchmarks/driver_scale.py                       # 2,000 trials, 8 at a time
    python benchmarks/driver_scale.py --trials 200 --test 500
    python benchmarks/driver_scale.py --bare                # Ray Tune alone: the floor under fercore's driver

--bare runs the same number of trials through Ray Tune alone (tune.Tuner, random search, no scheduler, Ray's own
experiment state, reuse_actors on as fercore runs it), each reporting the same 30 epochs of figures as (key, value)
pairs, with no artifacts and no fercore callback: what Ray's driver itself costs per trial on this machine.
--bare --segments K runs them as K consecutive Tuner runs in the one driver process (trials / K each): whether the
memory Ray Tune's controller holds per trial is given back when a run ends (a sweep in segments would then be flat);
its JSON adds rss_mb_at_run_ends.

Last line, JSON: driver_ms_per_trial_at_100, driver_ms_per_trial_at_<trials>, driver_rss_mb_at_100,
driver_rss_mb_at_<trials>, rss_kb_per_trial (the slope after trial 100), files_in_results (after the sweep; of
which tensorboard_files: TensorBoard's one event file per trial, a run each, as its HParams tab compares them, and
files_in_results_but_tensorboard), trials, seconds.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import yaml

CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
EPOCHS = 30
POINTS = 100  # per class and source
# Trials per window the time per trial is averaged over: wide enough to hold several of the commits that come with
# Ray's saves of its state (10 s apart or more), whose cost a narrower window would catch or miss by chance.
WINDOW = 200


def payload_trial(config, data=None, cache=None, objectives=(), finished=None, inbox=None):
    """A trial that trains nothing and reports what a real augmented trial reports, through fercore's reporter."""
    from fercore.sweep.trainable import _Reporter, trial_config

    flat = trial_config(config)
    n_test = int(os.environ.get("FERCORE_BENCH_TEST_FACES", 3589))  # set by main(); Ray's workers inherit it
    rng = np.random.default_rng(abs(hash(json.dumps(flat, sort_keys=True, default=str))) % 2**32)
    report = _Reporter(tuple(objectives), inbox)
    report.config = flat
    for epoch in range(1, EPOCHS + 1):
        figures = {f"val_{m}": float(rng.uniform()) for m in ("loss", "accuracy", "macro_f1", "weighted_f1")}
        figures |= {f"val_{m}_{c}": float(rng.uniform()) for m in ("precision", "recall", "f1") for c in CLASSES}
        report(epoch, {"epoch": epoch, "train_loss": float(rng.uniform()), "lr": 1e-3, **figures},
               _last_artifacts(rng, flat, n_test) if epoch == EPOCHS else None)


def _last_artifacts(rng: np.random.Generator, flat: dict, n_test: int) -> dict:
    from fercore.trial import grid_png

    row = {**flat, "status": "completed", "val_macro_f1": float(rng.uniform())}
    row |= {f"{s}_{m}_{c}": float(rng.uniform()) for s in ("val", "test") for m in ("precision", "recall", "f1")
            for c in CLASSES}
    row |= {f"{k}_{c}": float(rng.uniform()) for k in ("gen_fid", "uplift_test_recall", "gain_control_test_recall",
                                                       "n_train_real", "n_train_synthetic") for c in CLASSES}
    row |= {f"test_{m}": float(rng.uniform()) for m in ("accuracy", "macro_f1", "balanced_accuracy", "auroc")}
    labels = np.tile(np.repeat(np.arange(len(CLASSES)), POINTS), 2)
    models = {m: {"predicted": rng.integers(0, 7, n_test), "proba": rng.dirichlet(np.ones(7), n_test)}
              for m in ("baseline", "control", "subset")}
    return {"row": row, "classes": list(CLASSES), "confusion": rng.integers(0, 60, (7, 7)).tolist(),
            "embedding": {"source": np.repeat([0, 1], len(labels) // 2), "label": labels,
                          "x": rng.normal(size=len(labels)), "y": rng.normal(size=len(labels))},
            "samples_png": grid_png(rng.integers(0, 255, (7, 8, 48, 48), dtype=np.uint8)),
            "predictions": {"index": np.arange(n_test), "true": rng.integers(0, 7, n_test),
                            "predicted": rng.integers(0, 7, n_test), "proba": rng.dirichlet(np.ones(7), n_test),
                            "paired": models}}


def bare_trial(config):
    """payload_trial's epochs as Ray Tune alone receives them: the objective and epoch as numbers, the rest as pairs."""
    from ray import tune

    rng = np.random.default_rng(int(config["i"]))
    for epoch in range(1, EPOCHS + 1):
        figures = {f"val_{m}": float(rng.uniform()) for m in ("loss", "accuracy", "macro_f1", "weighted_f1")}
        figures |= {f"val_{m}_{c}": float(rng.uniform()) for m in ("precision", "recall", "f1") for c in CLASSES}
        tune.report({"epoch": epoch, "val_macro_f1": figures["val_macro_f1"],
                     "epoch_metrics": tuple({"train_loss": float(rng.uniform()), **figures}.items())})


def run_bare(args, root: Path, finished: list[tuple[float, int]]) -> None:
    """The trials through Ray Tune alone, FINISHED getting (time, RSS) as each completes."""
    from ray import tune

    class Watch(tune.Callback):
        def on_trial_complete(self, iteration, trials, trial, **info):
            finished.append((time.perf_counter(), rss_kb()))

    for segment in range(args.segments):
        tuner = tune.Tuner(
            tune.with_resources(bare_trial, {"cpu": 0.1}),
            param_space={"i": tune.randint(0, 2**31 - 1), "lr": tune.loguniform(1e-4, 1e-1)},
            tune_config=tune.TuneConfig(num_samples=args.trials // args.segments, max_concurrent_trials=args.concurrent,
                                        metric="val_macro_f1", mode="max", reuse_actors=True),
            run_config=tune.RunConfig(name=f"bare{segment}", storage_path=str(root / "results"), callbacks=[Watch()],
                                      verbose=0))
        tuner.fit()
        del tuner


def rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=2000)
    p.add_argument("--concurrent", type=int, default=8)
    p.add_argument("--test", type=int, default=3589, help="test faces whose predictions each trial reports")
    p.add_argument("--bare", action="store_true", help="Ray Tune alone, the same epochs, no artifacts, no fercore")
    p.add_argument("--segments", type=int, default=1, help="--bare: as this many consecutive Tuner runs")
    args = p.parse_args()
    import ray

    from fercore.sweep.run import run_sweep
    from fercore.sweep.spec import load_sweep

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        sweep = {"name": "driver_scale", "data": {"source": "procedural", "scale": 0.01}, "sampler": "random",
                 "space": "quickstart", "fixed": {"augment.policy": "none", "classifier.backbone": "linear"},
                 "scheduler": {"type": "none"}, "num_samples": args.trials, "max_concurrent": args.concurrent,
                 "resources": {"cpu": 0.1}}
        path = root / "driver_scale.yaml"
        path.write_text(yaml.safe_dump(sweep))
        spec = load_sweep(path)
        os.environ["FERCORE_BENCH_TEST_FACES"] = str(args.test)
        out = root / "results" / "driver_scale"
        finished: list[tuple[float, int]] = []  # (time, driver RSS) as each trial's TensorBoard run is closed
        done = threading.Event()

        def watch() -> None:
            seen = 0
            while not done.is_set():
                # A trial's run per trial (tb/.layout, the custom-scalars layout, is none).
                n = sum(not p.name.startswith(".") for p in (out / "tb").iterdir()) if (out / "tb").is_dir() else 0
                for _ in range(seen, n):
                    finished.append((time.perf_counter(), rss_kb()))
                seen = n
                done.wait(0.05)

        ray.init(num_cpus=max(1, int(args.concurrent * 0.1) + 1), include_dashboard=False, log_to_driver=False,
                 logging_level="WARNING")
        watcher = threading.Thread(target=watch, daemon=True)
        started = time.perf_counter()
        if args.bare:
            run_bare(args, root, finished)
        else:
            watcher.start()
            run_sweep(spec, root / "results", trainable=payload_trial)
        seconds = time.perf_counter() - started
        done.set()
        if watcher.is_alive():
            watcher.join()
        ray.shutdown()
        files = {"all": 0, "tb": 0}
        for folder, _, names in os.walk(root / "results" if args.bare else out):
            files["all"] += len(names)
            files["tb"] += len(names) * Path(folder).is_relative_to(out / "tb")
    times, rss = np.array([t for t, _ in finished]), np.array([r for _, r in finished], dtype=float)
    n = len(times)

    def per_trial_ms(lo: int, hi: int) -> float:
        lo, hi = max(1, lo), min(n - 1, hi)
        return float(1000 * (times[hi] - times[lo]) / (hi - lo)) if hi > lo else float("nan")

    at = min(100, n - 1)
    window = min(WINDOW, max(2, n // 2))
    slope = float(np.polyfit(np.arange(at, n), rss[at:], 1)[0]) if n - at > 2 else float("nan")
    figures = {"trials": n, "seconds": round(seconds),
               "driver_ms_per_trial_at_100": round(per_trial_ms(at - window // 2, at + window // 2), 1),
               f"driver_ms_per_trial_at_{n}": round(per_trial_ms(n - window, n - 1), 1),
               "driver_rss_mb_at_100": round(rss[at] / 1024), f"driver_rss_mb_at_{n}": round(rss[-1] / 1024),
               "rss_kb_per_trial": round(slope, 1), "files_in_results": files["all"],
               "files_in_results_but_tensorboard": files["all"] - files["tb"], "tensorboard_files": files["tb"]}
    if args.bare and args.segments > 1:
        # Whether a run's end gives its memory back: the RSS after each run's last trial (flat if it does).
        per_run = n // args.segments
        figures["rss_mb_at_run_ends"] = [round(rss[min(n, (k + 1) * per_run) - 1] / 1024) for k in range(args.segments)]
    what = (f"Ray Tune alone (--bare, {args.segments} Tuner run{'s' if args.segments > 1 else ''})" if args.bare
            else f"{args.test} test predictions x 4 models each")
    print(f"{n} trials, {args.concurrent} at a time, {what}, on {os.cpu_count()} CPU cores: {seconds:.0f} s")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
