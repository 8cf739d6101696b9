"""Run every sweep in sweeps/ with --smoke (more trials where they are cheap), write its report, and print what each
grid key's values did, as Markdown: the figures behind docs/results-builtin.md.

    .venv/bin/python benchmarks/paper_sweeps.py [--storage DIR] [--only NAME ...]

Smoke size (fercore.sweep.smoke.smoke_spec): 1 classifier epoch, generators of 1 epoch and width 8, the procedural set
at scale 0.01, and a confirmation of the best config on one fresh seed. (docs/results-builtin.md's figures were taken
at 2 epochs and scale 0.015, before the confirmation phase.) It checks that each report's experiment runs end to end
and shows what the report's tables would hold; at this size the intervals are wide, and the figures say nothing about
FER2013.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq


# Trials per sweep: the whole smoke grid where it is cheap, a sample of it where it is not.
TRIALS = {"quickstart": 6, "confidence_filter": 8, "cgan_minority": 2, "balance_targets": 4, "weighted_loss": 16,
          "real_ratio_grid": 10, "optuna_full": 8}
SHOWN = ("test_macro_f1", "uplift_test_macro_f1", "gain_control_test_macro_f1", "test_recall_disgust",
         "uplift_test_recall_disgust")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--storage", default="results/builtin")
    p.add_argument("--only", nargs="*", default=list(TRIALS))
    args = p.parse_args()
    fersweep = str(Path(sys.executable).with_name("fersweep"))
    for name in args.only:
        # Its own output from an earlier run: a new run into it is refused (it would join that run's study).
        shutil.rmtree(Path(args.storage) / name, ignore_errors=True)
        started = time.time()
        run = [fersweep, "run", f"sweeps/{name}.yaml", "--smoke", "--num-samples", str(TRIALS[name]),
               "--storage", args.storage]
        subprocess.run(run, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        folder = Path(args.storage) / name
        subprocess.run([fersweep, "report", str(folder)], check=True, stdout=subprocess.DEVNULL)
        print(summary(name, folder, time.time() - started), flush=True)
    return 0


def summary(name: str, folder: Path, seconds: float) -> str:
    rows = pq.read_table(folder / "trials.parquet").to_pandas()
    done = rows[rows["status"] == "completed"]
    lines = [f"### {name}: {len(done)} of {len(rows)} trials completed in {seconds:.0f} s "
             f"(report: {folder}/report/report.md)", ""]
    record = json.loads((folder / "sweep.json").read_text())
    if len(done):
        # Chosen as the report chooses: by the sweep's validation objective, never by a test figure.
        pairs = zip(record.get("metrics") or [], record.get("modes") or [])
        metric, mode = next(((m, d) for m, d in pairs if "test" not in m and m.startswith("val_")),
                            ("val_macro_f1", "max"))
        best = done.sort_values(metric, ascending=mode == "min").iloc[0]
        described = ["classifier.backbone", "augment.policy"] + (["generator.type"] if best["n_train_synthetic"] else [])
        lines.append(f"Chosen by {metric} ({best[metric]:.3f}): {best['trial_id']}, test macro-F1 "
                     f"{best['test_macro_f1']:.3f} [{best['test_macro_f1_ci_low']:.3f}, "
                     f"{best['test_macro_f1_ci_high']:.3f}]; "
                     + ", ".join(f"{k}={best[k]}" for k in described if k in best and best[k] is not None))
        lines.append("")
    grid = record["grid"]  # what the run varied (a smoke grid is smaller)
    keys = list(grid) or ["classifier.backbone", "augment.policy", "generator.type"]
    shown = [c for c in SHOWN if c in done]
    lines += ["| key | value | trials | " + " | ".join(f"mean {c}" for c in shown) + " |",
              "|---|---|---|" + "---|" * len(shown)]
    for key in keys:
        if key not in done:
            continue
        for value, group in done.groupby(key, dropna=True):
            cells = ["–" if group[c].isna().all() else f"{group[c].mean():+.3f}" if c.startswith(("uplift", "gain"))
                     else f"{group[c].mean():.3f}" for c in shown]
            lines.append(f"| {key} | {value} | {len(group)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
