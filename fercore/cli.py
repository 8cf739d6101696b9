"""`fersweep`: run a sweep, run one trial without Ray, list what a config can name, inspect data, report on a sweep.

User errors (bad files, configs, sweeps) print one line and exit with status 2; tracebacks are for bugs only.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import traceback
from pathlib import Path

from fercore.errors import ConfigError, UserError
from fercore.redact import RedactingStream


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    streams = sys.stdout, sys.stderr
    # Every line printed from here on (Ray's too) without URL passwords; put back after, for callers in-process.
    sys.stdout, sys.stderr = (s if isinstance(s, RedactingStream) else RedactingStream(s) for s in streams)
    try:
        return args.func(args) or 0
    except UserError as e:
        print(f"fersweep: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fersweep: interrupted", file=sys.stderr)
        return 130
    except Exception:  # a bug: its traceback, through the redacting stream (a driver's URL may be in its message)
        traceback.print_exc()
        return 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        sys.stdout, sys.stderr = streams


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fersweep", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run a sweep file with Ray Tune")
    run.add_argument("sweep", help="a sweep file, e.g. sweeps/quickstart.yaml (or just its name)")
    run.add_argument("--storage", default="results", metavar="DIR|URI",
                     help="results folder (default ./results), or a URI that outlives the machine: s3://bucket/prefix, "
                          "gs://bucket/prefix, file:///abs/path, s3://bucket/prefix?endpoint_override=HOST:PORT"
                          "&scheme=http; with a URI the driver writes a local copy (under FERCORE_CACHE) and uploads "
                          "it, and the trials' cache stays on each node's local disk")
    run.add_argument("--data", default=None, metavar="SOURCE",
                     help="data source for every trial, overriding the sweep file's data.source: a FER2013 .csv, a "
                          "class-per-folder tree (the Kaggle image release's fer2013/), a RAF-DB folder")
    run.add_argument("--address", default=None, help="Ray cluster address (default: start a local Ray instance)")
    run.add_argument("--num-samples", type=int, default=None, help="number of trials (default: the sweep file's)")
    run.add_argument("--max-concurrent", type=int, default=None, help="trials running at once")
    run.add_argument("--smoke", action="store_true",
                     help="two tiny trials (or --num-samples), to check the sweep end to end")
    run.add_argument("--resume", action="store_true",
                     help="finish the sweep in --storage whose driver stopped; finished trials are not run again")
    run.add_argument("--space-file", default=None, metavar="PATH",
                     help="a search space's Python file (defining space(trial)) to use instead of the sweep file's "
                          "`space`, which names only a module of search_spaces/")
    run.add_argument("--trust-storage", action="store_true",
                     help="with --resume from a URI: unpickle Ray Tune's state downloaded from it (whoever can write "
                          "there could run code on this machine; refused without this)")
    run.add_argument("--gpus-per-trial", type=float, default=None, metavar="F",
                     help="GPUs per trial, overriding resources.gpu: a fraction in (0, 1] packs trials onto one GPU, "
                          "a whole number gives each trial that many")
    run.add_argument("--confirm", type=_confirm_arg, default=None, metavar="TOP,SEEDS",
                     help="the confirmation phase's size in place of the sweep file's confirm (also with --smoke, "
                          "whose own is 1,1): the TOP configs again on SEEDS fresh seeds; 0,1: none")
    run.add_argument("--verbose", action="store_true",
                     help="Ray Tune's own banners and tables too (fercore's progress view is shown either way)")
    run.set_defaults(func=_cmd_run)

    trial = sub.add_parser("trial", help="run one trial in this process, without Ray; prints its metrics as JSON")
    trial.add_argument("assignments", nargs="*", metavar="KEY=VALUE", help="config values, e.g. classifier.backbone=cnn3")
    trial.add_argument("--data", default=None, help="data source (overrides data.source)")
    trial.add_argument("--storage", default=None, help="also write the trial's row to DIR/trials.parquet and keep what "
                                                         "it trained in DIR/cache for later trials")
    trial.set_defaults(func=_cmd_trial)

    status = sub.add_parser("status", help="a running or finished sweep's progress, from any terminal")
    status.add_argument("results", metavar="RESULTS", help="a sweep's results folder (e.g. results/quickstart) or its "
                                                          "URI (s3://bucket/prefix/quickstart)")
    status.set_defaults(func=_cmd_status)

    lst = sub.add_parser("list", help="every name a config can use, and the keys each declares")
    lst.set_defaults(func=_cmd_list)

    report = sub.add_parser("report", help="write report.md, report.html and PNG plots from a sweep's results folder")
    report.add_argument("results", metavar="RESULTS_DIR", help="one sweep's results folder, e.g. results/quickstart")
    report.add_argument("--out", default=None, help="folder to write to (default RESULTS_DIR/report)")
    report.set_defaults(func=_cmd_report)

    data = sub.add_parser("data", help="inspect a data source")
    data_sub = data.add_subparsers(required=True, metavar="ACTION")
    for name, helptext, func in (("info", "image count per class and split", _cmd_data_info),
                                 ("preview", "a PNG grid of examples per class", _cmd_data_preview)):
        d = data_sub.add_parser(name, help=helptext)
        d.add_argument("source", help="'procedural', a FER2013 .csv, or an image folder")
        d.add_argument("--scale", type=float, default=0.1, help="procedural set size, times FER2013's counts")
        d.add_argument("--seed", type=int, default=0)
        d.add_argument("--image-size", type=int, default=48)
        d.add_argument("--set", action="append", metavar="KEY=VALUE",
                       help="any data.* key, as in a sweep file's data section (e.g. classes=folders, "
                            "group='^S(\\d+)_'); repeatable")
        if name == "preview":
            d.add_argument("--out", default="grid.png", help="PNG file to write")
            d.add_argument("--per-class", type=int, default=10, help="examples per class")
        d.set_defaults(func=func)
    return p


def _cmd_run(args) -> int:
    from fercore.sweep.spec import load_sweep, set_data_source, set_gpus_per_trial

    spec = load_sweep(args.sweep, args.space_file)  # Validate before Ray is imported or started.
    if args.data is not None:
        set_data_source(spec, args.data)
    if args.gpus_per_trial is not None:
        set_gpus_per_trial(spec, args.gpus_per_trial)
    from fercore.sweep.run import run_sweep

    run_sweep(spec, args.storage, address=args.address, num_samples=args.num_samples,
              max_concurrent=args.max_concurrent, smoke=args.smoke, resume=args.resume,
              trust_storage=args.trust_storage, verbose=args.verbose, confirm=args.confirm)
    return 0


def _confirm_arg(text: str) -> tuple[int, int]:
    """`--confirm TOP,SEEDS`: two whole numbers, TOP >= 0 and SEEDS >= 1."""
    try:
        top, seeds = (int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected TOP,SEEDS (e.g. 3,5), got {text!r}") from None
    if top < 0 or seeds < 1:
        raise argparse.ArgumentTypeError(f"expected TOP >= 0 and SEEDS >= 1, got {text!r}")
    return top, seeds


def _cmd_status(args) -> int:
    from fercore.sweep.status import sweep_status

    for line in sweep_status(args.results):
        print(line)
    return 0


def _cmd_trial(args) -> int:
    from fercore import config
    from fercore.data import load_configured
    from fercore.cache import CacheStore
    from fercore.trial import run

    flat = config.parse_assignments(args.assignments)
    if args.data:
        flat["data.source"] = args.data
    resolved = config.resolve(flat)
    d = resolved.data
    data = load_configured(d)
    print(f"data: {data.source}, {len(data.images)} images", flush=True)
    from fercore.generators import Diverged

    try:
        # With --storage, trained generators, pools and baselines are kept under DIR/cache for the next trial.
        cache = CacheStore(Path(args.storage) / "cache") if args.storage else None
        result = run(resolved, data, cache=cache)
    except Diverged as e:
        print(json.dumps({"status": "diverged", "reason": str(e), "step": e.step}))
        return 1
    for line in leak_warnings(result.row):
        print(line, flush=True)
    if args.storage:
        from fercore.results import ResultsStore

        store = ResultsStore(Path(args.storage))
        trial_id = f"trial_{len(store.trial_ids()):05d}"
        store.add_trial({"trial_id": trial_id, **result.row})
        store.add_artifacts(trial_id, result.artifacts)
        store.add_epochs(trial_id, result.epochs)
        store.flush()
        print(f"wrote {Path(args.storage) / 'trials.parquet'}", flush=True)
    print(json.dumps(row_figures(result.row, resolved.flat())))
    return 0


# (row key, what the counted images are, the split they copy): the audit's counts a trial warns of.
LEAK_WARNINGS = (("leak_real_test", "of this trial's real training images", "test"),
                 ("leak_real_val", "of this trial's real training images", "validation"),
                 ("leak_synthetic_test", "synthetic training images", "test"),
                 ("leak_synthetic_val", "synthetic training images", "validation"))


def leak_warnings(row: dict) -> list[str]:
    """One warning line per nonzero copy count of a trial's audit (fercore.metrics.copies): real training images
    that copy a test or validation image mean the data set's own splits share near-copies (frames of one video, one
    subject in both splits); synthetic ones, a generator that reproduces held-out images."""
    lines = []
    for key, what, split in LEAK_WARNINGS:
        count = row.get(key)
        if count is None or not count > 0:  # absent, NaN or 0
            continue
        why = ("the data set's own train and " + ("test" if split == "test" else "val") + " splits share near-copies"
               if key.startswith("leak_real") else "the generator's images reproduce held-out faces")
        lines.append(f"warning: {int(count)} {what} nearly copy a {split} image (flips, shifts, tones, small rotations "
                     f"and crops included; {key}): {why}, so {split} figures overstate what the classifier learnt")
    return lines


def row_figures(row: dict, config: dict) -> dict:
    """Everything of a trial's row but its config (whose values the command line set): every figure, comparison,
    cache hit and count, as `fersweep trial`'s last line; a value JSON cannot hold (NaN) is null."""
    out = {}
    for key, value in row.items():
        if key in config or "." in key:
            continue
        if hasattr(value, "item"):  # a numpy scalar
            value = value.item()
        if isinstance(value, float) and not math.isfinite(value):
            value = None
        if value is None or isinstance(value, (bool, int, float, str)):
            out[key] = value
    return out


def _cmd_list(args) -> int:
    from fercore import config
    from fercore.sweep.keys import text_table
    from fercore.sweep.spaces import list_search_spaces, list_sweeps

    for section, (selector, reg, default) in config.SELECTORS.items():
        print(f"{section}.{selector} (default {default}):")
        for name, entry in reg.items():
            own = ", ".join(f"{section}.{p.name}={p.default}" for p in entry.params)
            print(f"  {name:<14} {entry.help}" + (f"  [{own}]" if own else ""))
    _list_filters()
    print("common keys:")
    print("  seed=0  " + "  ".join(f"{s}.{p.name}={p.default}" for s, ps in config.COMMON.items() for p in ps))
    print("sweep-file keys (sweeps/*.yaml):")
    print(text_table())
    print("search spaces: " + ", ".join(list_search_spaces()))
    print("sweeps: " + ", ".join(list_sweeps()))
    return 0


def _list_filters() -> None:
    """The quality filters (augment.filter), each with the keys it reads, as the policies are listed."""
    from fercore.augment.filters import FILTERS
    from fercore.sections import AUGMENT

    common = [p for p in AUGMENT if p.name.startswith("filter_")]
    default = next(p.default for p in AUGMENT if p.name == "filter")
    print(f"{FILTERS.key} (default {default}):")
    for name, entry in FILTERS.items():
        own = [*(() if name == "none" else common), *entry.params]  # none keeps every image: it reads no key
        keys = ", ".join(f"augment.{p.name}={p.default}" for p in own)
        print(f"  {name:<14} {entry.help}" + (f"  [{keys}]" if keys else ""))


def _cmd_report(args) -> int:
    from fercore.report import write_report

    written = write_report(args.results, args.out)
    print(f"wrote {written.markdown}")
    print(f"wrote {written.html}")
    if written.images:
        print(f"  with {len(written.images)} plots in {written.markdown.parent}: "
              + ", ".join(p.name for p in written.images))
    return 0


def _load_for_inspection(args):
    """The data set `fersweep data` inspects: SOURCE read with the given data.* keys, as a sweep would read it."""
    from fercore.data import load_configured

    return load_configured(_inspected_section(args))


def _inspected_section(args):
    """The data config section of `fersweep data`'s SOURCE and --set keys."""
    from fercore.config import resolve

    flat = {"data.source": args.source, "data.scale": args.scale, "data.seed": args.seed,
            "data.image_size": args.image_size}
    for item in args.set or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item}: expected KEY=VALUE, a data key such as classes=folders")
        flat[key if key.startswith("data.") else f"data.{key}"] = value
    return resolve(flat, drop_inapplicable=True).data


def _cmd_data_info(args) -> int:
    data = _load_for_inspection(args)
    counts = data.counts()
    colour = " RGB" if data.channels == 3 else ""
    print(f"{data.source}: {len(data.images)} images of {data.image_size}x{data.image_size}{colour}, "
          f"{len(data.class_names)} classes, fingerprint {data.fingerprint}")
    width = max(10, max(len(n) for n in data.class_names) + 2)
    print(f"{'class':<{width}}" + "".join(f"{s:>8}" for s in counts))
    for i, name in enumerate(data.class_names):
        print(f"{name:<{width}}" + "".join(f"{counts[s][i]:>8}" for s in counts))
    print(f"{'total':<{width}}" + "".join(f"{sum(counts[s]):>8}" for s in counts))
    absent = [name for i, name in enumerate(data.class_names) if not counts["test"][i]]
    if absent:
        print(f"note: no test image of {', '.join(absent)}: reported as absent (test_absent_classes) and left out "
              "of macro averages")
    _print_subjects(data)
    _print_copies(data, _inspected_section(args).dedupe)
    return 0


def _print_copies(data, how: str) -> None:
    """The data set's own cross-split near-copies (the ones trials count and data.dedupe drops, found once per data
    set and kept beside converted data sets): a warning each under data.dedupe none, what was removed under drop.
    With k-fold, each fold's splits (the trials of fold i run on data.for_fold(i))."""
    from fercore.cache.dedupe import dedupe
    from fercore.cache.split_copies import counts, split_copies

    for fold in range(data.n_folds) if data.n_folds else [None]:
        part = data if fold is None else data.for_fold(fold)
        where = "" if fold is None else f"fold {fold}: "
        if how == "drop":
            _, removed = dedupe(part, how)
            print(f"{where}data.dedupe drop: removed {removed['dedupe_removed_train']} training faces that nearly "
                  f"copy a validation or test face and {removed['dedupe_removed_val']} validation faces that copy a "
                  "test face (the counts above are before; the test split is untouched)")
            continue
        for pair, count in counts(split_copies(part)).items():
            if count:
                cand, ref = pair.split("_")
                print(f"warning: {where}{count} {cand} images nearly copy a {ref} image (flips, shifts, tones, small "
                      f"rotations and crops included): frames of one video or one subject in both splits inflate "
                      f"{ref} figures; data.dedupe: drop removes them")


def _print_subjects(data) -> None:
    """Subjects per split (data.group), and each fold's images and subjects per split (data.folds)."""
    subjects = data.subjects()
    if subjects is not None:
        print(f"{'subjects':<10}" + "".join(f"{subjects[s]:>8}" for s in subjects)
              + f"   ({len(data.group_names)} subjects, each in one split)")
    for i in range(data.n_folds):
        part = data.for_fold(i)
        counts, subjects = part.counts(), part.subjects()
        print(f"fold {i}: " + ", ".join(
            f"{s} {sum(counts[s])} images" + (f" / {subjects[s]} subjects" if subjects is not None else "")
            for s in counts))


def _cmd_data_preview(args) -> int:
    import numpy as np
    from PIL import Image

    data = _load_for_inspection(args)
    classes = data.class_names
    x, y = data.split("train")
    rng = np.random.default_rng(args.seed)
    size, k = data.image_size, args.per_class
    canvas = np.full((len(classes) * size, k * size, *x.shape[3:]), 255, np.uint8)  # x.shape[3:]: (3,) if colour
    for c in range(len(classes)):
        idx = np.flatnonzero(y == c)
        for j, i in enumerate(rng.choice(idx, size=min(k, len(idx)), replace=False)):
            canvas[c * size:(c + 1) * size, j * size:(j + 1) * size] = x[i]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(canvas).save(out)
    print(f"wrote {out}: {len(classes)} rows ({', '.join(classes)}) x {k} training examples")
    return 0


if __name__ == "__main__":
    sys.exit(main())
