"""How long the README's first command takes (issue 25 item 1): `fersweep run sweeps/quickstart.yaml` from a fresh
results folder, RUNS times (install not counted), each in a new process as a user runs it; prints each run's wall
time and where it went (from the rows: the trials' setup, generator, classifier, baseline / control and the rest,
summed over trials, which run two at a time), then the median, and one JSON line.

    python benchmarks/quickstart_time.py [--runs 3] [--sweep sweeps/quickstart.yaml]

The target is a median of at most 150 s on a 2-core CPU. Each run starts with an empty cache (a user's first run);
nothing else should run on the machine meanwhile.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parent.parent
PARTS = ("setup_seconds", "generator_seconds", "synthetic_seconds", "classifier_seconds", "paired_seconds",
         "train_seconds")


def one_run(sweep: Path) -> dict:
    with tempfile.TemporaryDirectory(prefix="quickstart-") as scratch:
        env = {**os.environ, "RAY_ADDRESS": "", "FERCORE_CACHE": str(Path(scratch) / "fercore-cache")}
        started = time.perf_counter()
        done = subprocess.run([str(Path(sys.executable).parent / "fersweep"), "run", str(sweep), "--storage",
                               str(Path(scratch) / "results")], cwd=scratch, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - started
        if done.returncode != 0:
            sys.exit(f"the quickstart failed ({done.returncode}):\n{done.stderr[-3000:]}")
        rows = pq.read_table(next((Path(scratch) / "results").iterdir()) / "trials.parquet").to_pylist()
    spent = {k: round(sum(r.get(k) or 0.0 for r in rows), 1) for k in PARTS}
    statuses = {s: sum(r["status"] == s for r in rows) for s in sorted({r["status"] for r in rows})}
    augmented = sum(bool(r.get("n_train_synthetic")) for r in rows)
    controlled = sum(r.get("control_test_macro_f1") is not None for r in rows)
    return {"wall_s": round(wall, 1), "trials": len(rows), "statuses": statuses, "augmented": augmented,
            "augmented_with_control": controlled, "summed_over_trials_s": spent}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sweep", type=Path, default=REPO / "sweeps" / "quickstart.yaml")
    args = parser.parse_args()
    runs = []
    for i in range(args.runs):
        run = one_run(args.sweep)
        runs.append(run)
        print(f"run {i + 1}: {run['wall_s']} s, {run['trials']} trials {run['statuses']}, {run['augmented']} "
              f"augmented ({run['augmented_with_control']} with their control); summed over trials: "
              + ", ".join(f"{k} {v}" for k, v in run["summed_over_trials_s"].items()), flush=True)
    median = statistics.median(r["wall_s"] for r in runs)
    print(f"median of {len(runs)}: {median:.1f} s (target: at most 150 s on 2 cores)")
    print(json.dumps({"median_wall_s": median, "runs": runs}))


if __name__ == "__main__":
    main()
