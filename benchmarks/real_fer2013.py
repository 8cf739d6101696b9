"""Reference results and costs on real FER2013 (the Kaggle image release: train 28,709 / PublicTest 3,589 as
validation / PrivateTest 3,589 as test), for README's "Results on real FER2013". Every part runs real sweeps
(`fersweep run`) or real trials on the whole data set, prints what it measured with its seeds and wall time, and
ends with one line of JSON.

    python benchmarks/real_fer2013.py overhead [--data ../shared/data/fer2013-images.tar.gz]
    python benchmarks/real_fer2013.py epochs   [--epochs 7]
    python benchmarks/real_fer2013.py cnn3_003 [--seeds 0 1 2] [--dedupe none|drop|both]

- overhead: a sweep of two real-only cnn3 trials (one epoch each, one at a time) with empty caches. Each trial's
  setup (start to the classifier's first step) and everything but the classifier's training (train_seconds -
  classifier_seconds: setup, the test read, the audit, the split hashes on a cold cache): the first trial pays the
  data set's one-off costs, the second must not. JSON: first_trial_overhead_s, second_trial_overhead_s,
  first_trial_setup_s, second_trial_setup_s.
- epochs: report 003's tuned CNN (cnn3, lr 5e-4, batch 64, weight decay 1e-3) on the whole training split, each
  epoch timed, with denormal floats flushed (fercore's default) and not, in this one process. JSON: the seconds per
  epoch of each and the ratio of the last epochs' mean to the first epochs'.
- cnn3_003: report 003's CNN at its two settings (lr 1e-3, batch 32; lr 5e-4, batch 64, weight decay 1e-3), 20
  epochs, flips / +-15 degree rotations / 2-px shifts, early stopping on validation loss (patience 5), over the given
  seeds, on the raw splits and / or with data.dedupe drop: test accuracy and macro-F1 per setting, mean over seeds
  with a t interval (S - 1 degrees of freedom), beside 003's 57 % and 62.25 %.

The archive is unpacked into a temporary folder (never the repository); --data may also name an unpacked fer2013/
folder. Caches go to --work (default: a temporary folder), so a run starts cold unless told otherwise.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
ARCHIVE = ROOT.parent / "shared" / "data" / "fer2013-images.tar.gz"
FERSWEEP = Path(sys.executable).parent / "fersweep"
REPORT_003 = {"lr 1e-3, batch 32": 0.57, "lr 5e-4, batch 64, wd 1e-3": 0.6225}  # 003's reported accuracies
SETTINGS_003 = {"lr 1e-3, batch 32": {"classifier.lr": 1.0e-3, "classifier.batch_size": 32,
                                      "classifier.weight_decay": 0.0},
                "lr 5e-4, batch 64, wd 1e-3": {"classifier.lr": 5.0e-4, "classifier.batch_size": 64,
                                               "classifier.weight_decay": 1.0e-3}}
CNN3_003 = {"augment.policy": "none", "classifier.backbone": "cnn3", "classifier.width": 32,
            "classifier.dropout": 0.5, "classifier.optimizer": "adam", "classifier.epochs": 20,
            "classifier.patience": 5, "classifier.early_stop": "val_loss",
            "train.flip": 0.5, "train.rotate": 15.0, "train.translate": 2}


def fer2013_folder(data: Path, work: Path) -> Path:
    """The unpacked fer2013/ folder: DATA itself, or the archive DATA unpacked under WORK."""
    if data.is_dir():
        return data
    target = work / "fer2013-images"
    if not (target / "fer2013" / "train").is_dir():
        with tarfile.open(data) as archive:
            archive.extractall(target, filter="data")
    return target / "fer2013"


def run_sweep(name: str, source: Path, work: Path, grid: dict, fixed: dict, seeds: list[int],
              max_concurrent: int) -> tuple[list[dict], float]:
    """A grid sweep over GRID x SEEDS on SOURCE with FIXED values, run by `fersweep run` into WORK: its rows and
    its wall time."""
    sweep = {"name": name, "data": {"source": str(source)}, "sampler": "grid",
             "grid": {**grid, "seed": seeds}, "fixed": fixed, "metric": "val_macro_f1", "mode": "max",
             "scheduler": {"type": "none"}, "max_concurrent": max_concurrent, "resources": {"cpu": 1}}
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(sweep, sort_keys=False))
    env = {**os.environ, "FERCORE_CACHE": str(work / "cache"), "RAY_ADDRESS": ""}
    started = time.perf_counter()
    subprocess.run([str(FERSWEEP), "run", str(path), "--storage", str(work / "results")], check=True, env=env,
                   cwd=ROOT)
    wall = time.perf_counter() - started
    import pyarrow.parquet as pq

    return pq.read_table(work / "results" / name / "trials.parquet").to_pylist(), wall


def t_interval(values: list[float]) -> tuple[float, float, float]:
    """Mean and 95 % t interval over seeds (S - 1 degrees of freedom); NaN bounds for one seed."""
    from scipy import stats

    v = np.asarray(values, dtype=float)
    if len(v) < 2:
        return float(v.mean()), float("nan"), float("nan")
    half = stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))
    return float(v.mean()), float(v.mean() - half), float(v.mean() + half)


def part_overhead(source: Path, work: Path, args) -> dict:
    fixed = {"augment.policy": "none", "classifier.backbone": "cnn3", "classifier.width": 16,
             "classifier.epochs": 1}
    rows, wall = run_sweep("overhead", source, work, {}, fixed, [0, 1], max_concurrent=1)
    rows = sorted(rows, key=lambda r: r["seed"])
    for r in rows:
        print(f"trial seed {r['seed']}: setup {r['setup_seconds']:.1f} s, classifier {r['classifier_seconds']:.1f} s, "
              f"whole trial {r['train_seconds']:.1f} s, all but the classifier "
              f"{r['train_seconds'] - r['classifier_seconds']:.1f} s")
    print(f"sweep wall time {wall:.0f} s (Ray start and the driver's data load included)")
    first, second = rows
    return {"first_trial_overhead_s": round(first["train_seconds"] - first["classifier_seconds"], 1),
            "second_trial_overhead_s": round(second["train_seconds"] - second["classifier_seconds"], 1),
            "first_trial_setup_s": round(first["setup_seconds"], 1),
            "second_trial_setup_s": round(second["setup_seconds"], 1), "sweep_wall_s": round(wall)}


def part_epochs(source: Path, work: Path, args) -> dict:
    import torch

    from fercore.config import resolve
    from fercore.data import load
    from fercore.train import pick_device
    from fercore.trial import _trainer

    os.environ["FERCORE_CACHE"] = str(work / "cache")
    data = load(str(source))
    cfg = resolve({**CNN3_003, **SETTINGS_003["lr 5e-4, batch 64, wd 1e-3"], "classifier.epochs": args.epochs,
                   "classifier.patience": 0})
    out = {}
    for flushed in (True, False):
        device = pick_device("cpu")  # flushes denormals
        torch.set_flush_denormal(flushed)
        torch.manual_seed(0)
        trainer = _trainer(cfg, data.split("train"), data, device)
        seconds, started = [], time.perf_counter()
        for epoch in trainer.epochs():
            seconds.append(time.perf_counter() - started)
            started = time.perf_counter()
            print(f"flush {flushed}: epoch {epoch.epoch} {seconds[-1]:.1f} s  train_loss "
                  f"{epoch.metrics['train_loss']:.4f}  val_accuracy {epoch.metrics['val_accuracy']:.4f}", flush=True)
        k = max(1, len(seconds) // 3)
        name = "flushed" if flushed else "not_flushed"
        out[f"{name}_epoch_s"] = [round(s, 1) for s in seconds]
        out[f"{name}_late_over_early"] = round(float(np.mean(seconds[-k:]) / np.mean(seconds[:k])), 2)
    torch.set_flush_denormal(True)
    return out


def part_cnn3_003(source: Path, work: Path, args) -> dict:
    dedupes = ["none", "drop"] if args.dedupe == "both" else [args.dedupe]
    out = {}
    for dedupe in dedupes:
        rows = []
        wall = 0.0
        for label, setting in SETTINGS_003.items():
            part, seconds = run_sweep(f"cnn3_003_{dedupe}_{setting['classifier.batch_size']}", source, work, {},
                                      {**CNN3_003, **setting, "data.dedupe": dedupe}, args.seeds,
                                      max_concurrent=args.max_concurrent)
            rows += [{**r, "setting": label} for r in part]
            wall += seconds
        for label in SETTINGS_003:
            mine = [r for r in rows if r["setting"] == label and r["status"] == "completed"]
            acc, f1 = (t_interval([r[k] for r in mine]) for k in ("test_accuracy", "test_macro_f1"))
            epochs = [r["best_epoch"] for r in mine]
            removed = mine[0].get("dedupe_removed_train", 0) if mine else 0
            print(f"dedupe {dedupe} ({removed} training faces removed), {label}: {len(mine)} seeds, test accuracy "
                  f"{acc[0]:.4f} [{acc[1]:.4f}, {acc[2]:.4f}], macro-F1 {f1[0]:.4f} [{f1[1]:.4f}, {f1[2]:.4f}], "
                  f"best epochs {epochs}; 003 reported {REPORT_003[label]:.4f}")
            out[f"{dedupe}|{label}"] = {"test_accuracy": [round(v, 4) for v in acc],
                                         "test_macro_f1": [round(v, 4) for v in f1], "seeds": len(mine)}
        print(f"dedupe {dedupe}: {len(rows)} trials, sweep wall time {wall:.0f} s")
    return out


PARTS = {"overhead": part_overhead, "epochs": part_epochs, "cnn3_003": part_cnn3_003}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("part", choices=sorted(PARTS))
    p.add_argument("--data", type=Path, default=ARCHIVE, help="the archive or an unpacked fer2013/ folder")
    p.add_argument("--work", type=Path, default=None, help="caches and results (default: a temporary folder)")
    p.add_argument("--epochs", type=int, default=7)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--dedupe", choices=("none", "drop", "both"), default="both")
    p.add_argument("--max-concurrent", type=int, default=2)
    args = p.parse_args()
    if not args.data.exists():
        sys.exit(f"{args.data}: not found (the FER2013 archive, ../shared/data/fer2013-images.tar.gz)")
    with tempfile.TemporaryDirectory(prefix="fercore-real-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        source = fer2013_folder(args.data, work)
        started = time.perf_counter()
        figures = PARTS[args.part](source, work, args)
        print(f"machine: {os.cpu_count()} CPU cores; part {args.part} took {time.perf_counter() - started:.0f} s")
        print(json.dumps(figures))


if __name__ == "__main__":
    main()
