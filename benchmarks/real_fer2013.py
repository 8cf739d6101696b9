"""Reference results and costs on real FER2013 (the Kaggle image release: train 28,709 / PublicTest 3,589 as
validation / PrivateTest 3,589 as test), for docs/results-fer2013.md. Every part runs real sweeps
(`fersweep run`) or real trials on the whole data set, prints what it measured with its seeds and wall time, and
ends with one line of JSON.

    python benchmarks/real_fer2013.py overhead [--data ../shared/data/fer2013-images.tar.gz]
    python benchmarks/real_fer2013.py epochs   [--epochs 7]
    python benchmarks/real_fer2013.py cnn3_003 [--seeds 0 1 2] [--runs b:none b:drop a:none a:drop]
    python benchmarks/real_fer2013.py q001 | q002 [--seeds 0 1 2] [--confirm 2,5]
    python benchmarks/real_fer2013.py recipe | best2h [--seeds 0 1 2]

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
  seeds, on the raw splits and / or with data.dedupe drop (--runs): test accuracy and macro-F1 per run, mean over
  seeds with a t interval (S - 1 degrees of freedom), beside 003's 57 % and 62.25 %.
- q001, q002: report 001's question (cGAN top-ups of disgust, fear, surprise, discriminator filter off / on) and
  report 002's (a diffusion model topping every class up to 4,000 faces) at the CPU size QUESTIONS states, each
  trial paired with its real-only baseline and the oversampling control: macro-F1, the uplift over real-only and
  the gain over the control, disgust's recall, each as a mean over seeds with its t interval.
- recipe, best2h: report 003's CNN trained to its budget rather than 20 epochs (one-cycle learning rate, label
  smoothing, the best validation epoch tested), one trial at a time on every core: recipe (cnn3 width 32, 50
  epochs) is meant to stay under 30 minutes a trial, best2h (width 48, 60 epochs) under 2 hours; per seed the test
  accuracy and the whole trial's time.

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

from fercore.results.rows import CONFIRM, SEARCH, phase_of

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
              max_concurrent: int, confirm: str | None = None) -> tuple[list[dict], float]:
    """A grid sweep over GRID x SEEDS on SOURCE with FIXED values, run by `fersweep run` into WORK, MAX_CONCURRENT
    trials sharing the machine's cores (each with one torch thread): its rows and its wall time. CONFIRM ("TOP,SEEDS")
    adds a confirmation phase (`fersweep run --confirm`); on a sweep already begun in WORK it runs after that search."""
    cpu = min(1.0, int(100 * (os.cpu_count() or 1) / max_concurrent) / 100)  # 0.66 x 3 fits 2 cores; 0.67 x 3 not
    sweep = {"name": name, "data": {"source": str(source)}, "sampler": "grid",
             "grid": {**grid, "seed": seeds}, "fixed": {"train.threads": 1, **fixed}, "metric": "val_macro_f1",
             "mode": "max", "scheduler": {"type": "none"}, "max_concurrent": max_concurrent, "resources": {"cpu": cpu}}
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(sweep, sort_keys=False))
    env = {**os.environ, "FERCORE_CACHE": str(work / "cache"), "RAY_ADDRESS": ""}
    # A sweep of this name already begun in WORK (its driver stopped) is finished rather than started again; the wall
    # time is then the resumed part's only.
    resume = ["--resume"] if (work / "results" / name / "tune").is_dir() else []
    started = time.perf_counter()
    confirming = ["--confirm", confirm] if confirm else []
    subprocess.run([str(FERSWEEP), "run", str(path), "--storage", str(work / "results"), *resume, *confirming],
                   check=True, env=env, cwd=ROOT)
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
    for r in rows:  # in the order they ran (one at a time): trials.parquet appends each as it ends
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
    out = {}
    for run in args.runs:
        key, dedupe = run.split(":")
        label = list(SETTINGS_003)[ord(key) - ord("a")]
        setting = SETTINGS_003[label]
        rows, wall = run_sweep(f"cnn3_003_{key}_{dedupe}", source, work, {},
                               {**CNN3_003, **setting, "data.dedupe": dedupe}, args.seeds,
                               max_concurrent=args.max_concurrent)
        done = [r for r in rows if r["status"] == "completed"]
        acc, f1 = (t_interval([r[k] for r in done]) for k in ("test_accuracy", "test_macro_f1"))
        val = t_interval([r["val_accuracy"] for r in done])
        print(f"{label}, dedupe {dedupe} ({done[0]['dedupe_removed_train'] if done else '?'} training, "
              f"{done[0]['dedupe_removed_val'] if done else '?'} validation faces removed): {len(done)} seeds "
              f"{sorted(r['seed'] for r in done)}, test accuracy {acc[0]:.4f} [{acc[1]:.4f}, {acc[2]:.4f}], "
              f"macro-F1 {f1[0]:.4f} [{f1[1]:.4f}, {f1[2]:.4f}], validation accuracy {val[0]:.4f}, best epochs "
              f"{[r['best_epoch'] for r in done]}, {wall:.0f} s wall; 003 reported {REPORT_003[label]:.4f}",
              flush=True)
        out[run] = {"setting": label, "test_accuracy": [round(v, 4) for v in acc],
                    "test_macro_f1": [round(v, 4) for v in f1], "seeds": len(done), "wall_s": round(wall)}
    return out


# Report 001 and 002's questions at a stated CPU size: the generator trains on FER2013's training split only (after
# dedupe), the classifier is cnn3 (width 16, 8 epochs, batch 128); every trial is paired with its real-only baseline
# and the oversampling control (the same images per class, real ones drawn again), both cached per seed.
QUESTION_CLASSIFIER = {"classifier.backbone": "cnn3", "classifier.width": 16, "classifier.epochs": 8,
                       "classifier.batch_size": 128, "classifier.patience": 3, "classifier.early_stop": "val_loss",
                       "train.flip": 0.5, "train.translate": 2, "data.dedupe": "drop"}
QUESTIONS = {
    # 001: a cGAN tops up disgust, fear and surprise to the largest class, discriminator filter off / on.
    "q001": ({"augment.filter": ["none", "discriminator"]},
             {"generator.type": "cgan", "generator.resolution": 32, "generator.width": 16, "generator.epochs": 5,
              "generator.batch_size": 128, "augment.policy": "minority",
              "augment.minority_classes": "disgust,fear,surprise", "augment.minority_target": 0,
              "augment.filter_tau": 0.5, **QUESTION_CLASSIFIER}),
    # 002: a diffusion model tops every class up to a per-class target (the report's 10k-15k, here 4,000: about 5,200
    # synthetic faces). Balancing to the largest class (Aug. 1) needs ~22,500 DDIM samples a trial: 37 s per 256 on
    # one thread here, ~54 minutes a trial before its classifier trains.
    "q002": ({"augment.policy": ["per_class"]},
             {"generator.type": "diffusion", "generator.epochs": 3, "generator.noise_steps": 100,
              "augment.per_class_target": 4000, **QUESTION_CLASSIFIER}),
}
PAIRED = ("test_macro_f1", "uplift_test_macro_f1", "gain_control_test_macro_f1", "test_recall_disgust",
          "uplift_test_recall_disgust", "gain_control_test_recall_disgust")


def part_question(name: str):
    def run(source: Path, work: Path, args) -> dict:
        grid, fixed = QUESTIONS[name]
        rows, wall = run_sweep(name, source, work, grid, fixed, args.seeds, max_concurrent=args.max_concurrent,
                               confirm=args.confirm)
        key = next(iter(grid))
        out = {}
        for phase in (SEARCH, CONFIRM):
            of_phase = [r for r in rows if phase_of(r) == phase]
            out[phase] = _question_figures(f"{name} {phase}", key, grid[key], of_phase)
        print(f"{name}: {len(rows)} trials, {wall:.0f} s wall; t intervals over seeds (S - 1 degrees of freedom)")
        return out
    return run


def _question_figures(name: str, key: str, values: list, rows: list[dict]) -> dict:
    """Per value of KEY: the paired figures' means over the completed seeds of ROWS, with t intervals (printed)."""
    out = {}
    if rows:
        for value in values:
            done = [r for r in rows if r[key] == value and r["status"] == "completed"]
            figures = {m: t_interval([r[m] for r in done]) for m in PAIRED if done and m in done[0]}
            print(f"{name} {key}={value}: {len(done)} seeds {sorted(r['seed'] for r in done)}, " + ", ".join(
                f"{m} {v[0]:+.4f} [{v[1]:+.4f}, {v[2]:+.4f}]" for m, v in figures.items()), flush=True)
            out[str(value)] = {m: [round(x, 4) for x in v] for m, v in figures.items()}
    return out


# Report 003's CNN trained as long as the question allows rather than 20 epochs (its best epochs were 18-20 of 20):
# one trial at a time with both cores, a one-cycle learning rate over the whole budget, label smoothing, the best
# validation epoch's weights tested. `recipe`: under 30 minutes a trial; `best2h`: a wider CNN for 2 hours.
RECIPES = {
    "recipe": {**CNN3_003, "classifier.epochs": 50, "classifier.batch_size": 64, "classifier.lr": 3.0e-3,
               "classifier.schedule": "onecycle", "classifier.weight_decay": 1.0e-4, "classifier.label_smoothing": 0.1,
               "classifier.patience": 0, "classifier.early_stop": "val_macro_f1", "train.rotate": 10.0,
               "train.translate": 3},
    "best2h": {**CNN3_003, "classifier.width": 48, "classifier.epochs": 60, "classifier.batch_size": 64,
               "classifier.lr": 3.0e-3, "classifier.schedule": "onecycle", "classifier.weight_decay": 1.0e-4,
               "classifier.label_smoothing": 0.1, "classifier.patience": 0, "classifier.early_stop": "val_macro_f1",
               "train.rotate": 10.0, "train.translate": 3},
}


def part_recipe(name: str):
    def run(source: Path, work: Path, args) -> dict:
        fixed = {**RECIPES[name], "train.threads": os.cpu_count() or 1}  # one trial at a time, every core
        rows, wall = run_sweep(name, source, work, {}, fixed, args.seeds, max_concurrent=1)
        done = [r for r in rows if r["status"] == "completed"]
        for r in done:
            print(f"{name} seed {r['seed']}: test accuracy {r['test_accuracy']:.4f}, macro-F1 "
                  f"{r['test_macro_f1']:.4f}, validation accuracy {r['val_accuracy']:.4f}, best epoch "
                  f"{r['best_epoch']}, whole trial {r['train_seconds']:.0f} s", flush=True)
        acc = t_interval([r["test_accuracy"] for r in done])
        return {"test_accuracy": [round(v, 4) for v in acc], "seeds": len(done), "wall_s": round(wall),
                "trial_s": [round(r["train_seconds"]) for r in done]}
    return run


PARTS = {"overhead": part_overhead, "epochs": part_epochs, "cnn3_003": part_cnn3_003,
         "recipe": part_recipe("recipe"), "best2h": part_recipe("best2h"),
         "q001": part_question("q001"), "q002": part_question("q002")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("part", choices=sorted(PARTS))
    p.add_argument("--data", type=Path, default=ARCHIVE, help="the archive or an unpacked fer2013/ folder")
    p.add_argument("--work", type=Path, default=None, help="caches and results (default: a temporary folder)")
    p.add_argument("--epochs", type=int, default=7)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--runs", nargs="+", default=["b:none", "b:drop", "a:none", "a:drop"],
                   help="cnn3_003: SETTING:DEDUPE each, setting a (lr 1e-3, batch 32) or b (lr 5e-4, batch 64, "
                        "wd 1e-3), dedupe none or drop")
    p.add_argument("--max-concurrent", type=int, default=3, help="trials at once (3 seeds of a setting together)")
    p.add_argument("--confirm", default=None, metavar="TOP,SEEDS",
                   help="q001, q002: a confirmation phase after the grid (fersweep run --confirm), e.g. 2,5; figures "
                        "are printed for the search's seeds and the confirmation's apart")
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
