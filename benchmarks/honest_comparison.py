"""Issue 15's end-to-end check: a grid over classifier.lr x {none, balance} with seeds: 2 and 8 epochs, on a
FER2013-format CSV (the built-in procedural faces written in the Kaggle layout), through `fersweep run`, then
`fersweep report`; it then checks, from the written files alone, that
  - the report's first table is ordered by the sweep's objective (validation), test figures beside it;
  - both comparisons are there: uplift over the real-only baseline and gain over the oversampling control, with
    seed-aggregated intervals (the report's "Across seeds" section);
  - every trial's test predictions are in predictions.parquet, one row per test image, and those of the real-only
    baseline and oversampling control each augmented trial was compared against;
  - every value in the Optuna study equals the mean over its config's seeds of the best-epoch values in
    trials.parquet.

    python benchmarks/honest_comparison.py [--out results/honest] [--scale 0.05]

Prints what it checked and exits 1 when a check fails. About 5 minutes on 2 cores at the default scale.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

CLI = [sys.executable, "-c", "import sys; from fercore.cli import main; sys.exit(main())"]
USAGE = {"train": "Training", "val": "PublicTest", "test": "PrivateTest"}


def write_csv(path: Path, scale: float) -> int:
    """The procedural set at SCALE, written as FER2013's CSV: emotion, pixels, Usage."""
    from fercore.data import SPLITS, load

    data = load("procedural", scale=scale, seed=0)
    as_text = np.array([str(v) for v in range(256)], dtype=object)
    with open(path, "w") as f:
        f.write("emotion,pixels,Usage\n")
        for image, label, split in zip(data.images, data.labels, data.splits):
            f.write(f"{label},{' '.join(as_text[image.reshape(-1)])},{USAGE[SPLITS[split]]}\n")
    return len(data.images)


def sweep_file(path: Path, csv: Path) -> None:
    spec = {
        "name": "honest", "description": "issue 15: lr x {none, balance}, 2 seeds, 8 epochs, FER2013-format CSV",
        "data": {"source": str(csv)},
        "sampler": "grid",
        "grid": {"classifier.lr": [1.0e-3, 3.0e-3], "augment.policy": ["none", "balance"]},
        "fixed": {"classifier.backbone": "cnn3", "classifier.width": 16, "classifier.epochs": 8,
                  "classifier.batch_size": 64, "generator.type": "cgan", "generator.epochs": 3,
                  "generator.width": 16, "train.threads": 1},
        "metric": "val_macro_f1", "mode": "max", "scheduler": {"type": "none"},
        "seeds": 2, "max_concurrent": 2, "optuna_storage": True, "seed": 0,
    }
    path.write_text(yaml.safe_dump(spec, sort_keys=False))


def check(out: Path) -> list[tuple[str, bool, str]]:
    import optuna

    results = []
    trials = pd.read_parquet(out / "trials.parquet")
    done = trials[trials["status"] == "completed"]
    results.append(("every trial completed", len(done) == len(trials) == 8, f"{len(done)} of {len(trials)}"))

    report = (out / "report" / "report.md").read_text()
    first = _first_table(report)
    val_column = next(c for c in first.columns if c.startswith("val"))
    vals = [float(v.split()[0]) for v in first[val_column]]
    results.append(("section 1 ordered by validation (val_macro_f1, best first)", vals == sorted(vals, reverse=True),
                    f"val_macro_f1 column: {vals}"))
    results.append(("section 1 shows test figures beside it", any("test" in c for c in first.columns),
                    ", ".join(first.columns)))
    results.append(("uplift over the real-only baseline and gain over the oversampling control both reported",
                    "uplift" in report.lower() and "control" in report.lower()
                    and "gain_control_test_macro_f1" in trials, "columns uplift_test_macro_f1, "
                    "gain_control_test_macro_f1; report sections 2 and 2.1"))
    results.append(("seed-aggregated intervals (section 2.1 Across seeds)", "Across seeds" in report, ""))

    stored = pd.read_parquet(out / "predictions.parquet")
    predictions = stored[stored["model"] == "trial"]  # beside them: the baselines' and controls' rows
    test_n = int((pd.read_parquet(out / "confusion.parquet").groupby("trial_id")["count"].sum()).iloc[0])
    per_trial = predictions.groupby("trial_id").size()
    augmented = set(done.loc[done["augment.policy"] != "none", "trial_id"])
    compared = stored[stored["model"] != "trial"].groupby(["trial_id", "model"]).size()
    results.append(("predictions stored: one row per test image per trial, and per compared baseline and control",
                    set(per_trial.index) == set(done["trial_id"]) and (per_trial == test_n).all()
                    and {t for t, _ in compared.index} == augmented and (compared == test_n).all()
                    and {m for _, m in compared.index} == {"baseline", "control"},
                    f"{len(per_trial)} trials x {test_n} test images; {len(compared)} compared models"))

    study = optuna.load_study(study_name="honest", storage=f"sqlite:///{out / 'optuna.db'}")
    worst = 0.0
    for t in study.trials:
        same = done[(done["classifier.lr"] == t.params["classifier.lr"])
                    & (done["augment.policy"] == t.params["augment.policy"])]
        worst = max(worst, abs(t.value - same["val_macro_f1"].mean()))
    peaked_early = int((done["best_epoch"] < done["epochs_run"]).sum())
    results.append(("every Optuna value = its config's best-epoch mean over seeds",
                    len(study.trials) == 4 and worst < 1e-12,
                    f"{len(study.trials)} configs, largest difference {worst:.1e}; {peaked_early} of {len(done)} "
                    f"trials peaked before their last epoch"))
    return results


def _first_table(markdown: str) -> pd.DataFrame:
    from fercore.report.render import read_table

    header, body = read_table(markdown)
    return pd.DataFrame(body, columns=header)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("results/honest"))
    p.add_argument("--scale", type=float, default=0.05, help="procedural set size, times FER2013's class counts")
    p.add_argument("--check-only", action="store_true", help="check OUT/honest as a run left it, without running")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.check_only:
        return _print(check(args.out / "honest"))
    # A run into a folder an earlier run left would add its trials to that run's study and tables: start clean.
    shutil.rmtree(args.out / "honest", ignore_errors=True)
    csv, sweep = args.out / "fer2013_procedural.csv", args.out / "honest.yaml"
    print(f"wrote {csv}: {write_csv(csv, args.scale)} faces in FER2013's layout", flush=True)
    sweep_file(sweep, csv)
    subprocess.run([*CLI, "run", str(sweep), "--storage", str(args.out)], check=True)
    subprocess.run([*CLI, "report", str(args.out / "honest")], check=True)
    return _print(check(args.out / "honest"))


def _print(results: list[tuple[str, bool, str]]) -> int:
    for what, ok, detail in results:
        print(f"{'ok  ' if ok else 'FAIL'} {what}" + (f": {detail}" if detail else ""))
    failed = sum(not ok for _, ok, _ in results)
    print(f"{len(results) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
