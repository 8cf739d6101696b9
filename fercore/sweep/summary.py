"""The one-screen summary a sweep ends with: trials by status, the best trial or the Pareto front, what the cache
saved, warnings of near-copies across splits (fercore.metrics.copies' audit), and where the results, TensorBoard's events and the Optuna study are. No Ray here.
"""
from __future__ import annotations

from pathlib import Path

from fercore.cache import CacheStore
from fercore.config import all_keys
from fercore.numbers import finite
from fercore.redact import redact
from fercore.results import EPOCHS, PREDICTIONS, TRIALS, ResultsStore
from fercore.results.rows import CONFIRM, SEARCH, phase_of
from fercore.sections import DESCRIBED
from fercore.sweep.confirm import config_label, config_of, repeats_text, shown_keys
from fercore.sweep.spec import SweepSpec
from fercore.sweep.storage import SweepFolder


def print_summary(out: Path, store: ResultsStore, spec: SweepSpec, seconds: float, cache: CacheStore,
                  study_url: str | None = None, location: SweepFolder | None = None, uploaded: bool = True) -> None:
    rows = store.trial_rows()
    by_status: dict[str, int] = {}
    for r in rows:
        by_status[r["status"]] = by_status.get(r["status"], 0) + 1
    print(f"\nSweep {spec.name!r} finished in {seconds:.0f} s: "
          + ", ".join(f"{v} {k}" for k, v in sorted(by_status.items())))
    done = [r for r in rows if r["status"] == "completed"]
    for m in spec.metrics:
        if done and not any(finite(r.get(m)) for r in done):
            print(f"Note: no completed trial has a value of {m}; is the sweep's metric spelt as the rows' columns?")
    for line in leak_lines(rows):
        print(line)
    confirmed = [r for r in done if phase_of(r) == CONFIRM]
    if spec.multi_objective:
        _print_front(rows, done, spec)
    elif confirmed:
        _print_confirmed(confirmed, [r for r in done if phase_of(r) == SEARCH], spec)
    elif any(finite(r.get(spec.metric)) for r in done):
        _print_best(done, spec)
    _print_cache(cache)
    where = location.where if location is not None else lambda name: f"{out}/{name}"
    tables = [TRIALS, EPOCHS] + ([PREDICTIONS] if store.tables[PREDICTIONS].index else [])  # trials sent predictions
    print("Results: " + ", ".join(where(name) for name in tables))
    if location is not None and location.uri:
        print(f"  uploaded with tb/ from the driver's working copy {out}" if uploaded else
              f"  NOT all uploaded: the latest results are only in the driver's working copy {out}")
    print(f"TensorBoard: tensorboard --logdir {out}/tb")
    if study_url:
        where = study_url.removeprefix("journal://") if study_url.startswith("journal:") else study_url
        print(f"Optuna study {spec.name!r}: optuna-dashboard {redact(where)}")


def _count(rows: list[dict], key: str) -> tuple[int, int]:
    """The largest count of KEY over the rows, and how many rows have a positive one."""
    counts = [r[key] for r in rows if finite(r.get(key)) and r[key] > 0]
    return (int(max(counts)) if counts else 0), len(counts)


def leak_lines(rows: list[dict]) -> list[str]:
    """Warnings for the summary: the data set's own splits share near-copies (a trial's real training images copy a
    test or validation image: the largest count of any trial, as trials keep different real images), and synthetic
    images copy test or validation images (the trials and the largest count)."""
    lines = []
    real = {split: _count(rows, f"leak_real_{split}") for split in ("test", "val")}
    if any(n for n, _ in real.values()):
        lines.append("Warning: the data set's own splits share near-copies (frames of one video, one subject in both "
                     "splits): up to " + " and ".join(f"{n} real training images copy a "
                                                      f"{'test' if s == 'test' else 'validation'} image"
                                                      for s, (n, _) in real.items() if n)
                     + " in a trial (columns leak_real_test, leak_real_val); those figures are inflated")
    synthetic = {split: _count(rows, f"leak_synthetic_{split}") for split in ("test", "val")}
    if any(n for n, _ in synthetic.values()):
        lines.append("Warning: synthetic training images copy held-out images: " + "; ".join(
            f"{trials} trial{'' if trials == 1 else 's'} with up to {n} copying a {'test' if s == 'test' else 'validation'} image"
            for s, (n, trials) in synthetic.items() if n) + " (columns leak_synthetic_test, leak_synthetic_val)")
    return lines


def _print_front(rows: list[dict], done: list[dict], spec: SweepSpec) -> None:
    front = sorted((r for r in rows if r.get("pareto")), key=lambda r: r[spec.metric], reverse=spec.mode == "max")
    print(f"Pareto front over {', '.join(f'{m} ({d})' for m, d in zip(spec.metrics, spec.modes))}: "
          f"{len(front)} of {len(done)} completed trials (column 'pareto' in trials.parquet)")
    for r in front:
        print(f"  trial {r['trial_id']}: " + ", ".join(f"{m}={r[m]:.4g}" for m in spec.metrics) + "; "
              + ", ".join(f"{k}={r[k]}" for k in DESCRIBED if k in r))


def _print_best(done: list[dict], spec: SweepSpec) -> None:
    best = (max if spec.mode == "max" else min)((r for r in done if finite(r.get(spec.metric))),
                                                key=lambda r: r[spec.metric])
    print(f"Best by {spec.metric}: trial {best['trial_id']} ({spec.metric}={best[spec.metric]:.4f}, "
          f"test_macro_f1={best.get('test_macro_f1', float('nan')):.4f}, "
          f"test_accuracy={best.get('test_accuracy', float('nan')):.4f})")
    print("  " + ", ".join(f"{k}={best[k]}" for k in DESCRIBED if k in best))


def _print_confirmed(confirmed: list[dict], search: list[dict], spec: SweepSpec) -> None:
    """The confirmed configs, best first by their mean of the first objective over the confirmation's seeds, each
    with its search figure (chosen on those very trials: it leans upward) and its test figures' means."""
    groups: dict[tuple, list[dict]] = {}
    known = all_keys()
    for r in confirmed:
        groups.setdefault(config_label(config_of(r, known)), []).append(r)
    searched: dict[tuple, list[float]] = {}
    for r in search:
        if finite(r.get(spec.metric)):
            searched.setdefault(config_label(config_of(r, known)), []).append(float(r[spec.metric]))

    def mean(rows: list[dict], key: str) -> float:
        values = [float(r[key]) for r in rows if finite(r.get(key))]
        return sum(values) / len(values) if values else float("nan")

    order = sorted(groups, key=lambda g: mean(groups[g], spec.metric), reverse=spec.mode == "max")
    shown = shown_keys(search, DESCRIBED)
    print(f"Confirmed by {spec.metric} (the confirmation phase: fresh seeds, run to completion; the search's figure "
          f"chose them and leans upward):")
    for rank, g in enumerate(order, 1):
        seen = searched.get(g, [])
        search_mean = f"{sum(seen) / len(seen):.4f}" if seen else "-"
        print(f"  {rank}. {spec.metric}={mean(groups[g], spec.metric):.4f} over {repeats_text(groups[g])} (search "
              f"{search_mean}), test_macro_f1={mean(groups[g], 'test_macro_f1'):.4f}, "
              f"test_accuracy={mean(groups[g], 'test_accuracy'):.4f}; "
              + ", ".join(f"{k}={dict(g).get(k)}" for k in shown))


def _print_cache(cache: CacheStore) -> None:
    # Kinds are generator-v1, pool-v2, reference-v3, baseline-v3 (entries.RULES): what the cache saved this sweep.
    counts = cache.counts_by_kind()
    kinds = sorted({kind for kind, _ in counts})
    if kinds:
        print("Cache: " + ", ".join(f"{k} built {counts[k, 'built']}, reused {counts[k, 'hit']}"
                                    + (f", damaged and rebuilt {counts[k, 'corrupt']}" if counts[k, 'corrupt'] else "")
                                    for k in kinds) + f" ({cache.root})")
