"""Do two versions of fercore write the same outputs? Runs benchmarks/equivalence/grid.yaml (a grid without ASHA,
one trial at a time, whose trials repeat exactly on the CPU) and compares two results folders: every Parquet table,
every TensorBoard event (scalars, images, HParams sessions) and the report's text (each folder's report written by
the code that ran its sweep, from its tables with Ray's random trial ids replaced by what each trial was).

    python benchmarks/same_outputs.py run OUT                  # this checkout's fercore
    PYTHONPATH=/path/to/other/checkout python benchmarks/same_outputs.py run OUT_OTHER
    python benchmarks/same_outputs.py compare OUT_OTHER/equivalence OUT/equivalence [--new-key train.precision]

Rows are matched by what the trial was (its config), not by Ray's trial ids, which differ between runs; wall times,
node ids and the trial ids themselves are left out of the comparison. Exits 1 and lists every difference when the
two disagree.
"""
from __future__ import annotations

import argparse
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

SWEEP = Path(__file__).resolve().parent / "equivalence" / "grid.yaml"
TABLES = ("trials", "epochs", "per_class", "generators", "confusion", "embeddings")
# Columns whose values differ between any two runs of the same code: clocks, hosts, Ray's ids.
VOLATILE = re.compile(r"(^|_)seconds$|^time_total_s$|^node_ip$|^node_id$|^trial_id$|^source_trial_id$")
IDENTITY = ("classifier.backbone", "augment.policy", "generator.type", "seed")


CODE = "fercore_used.txt"  # beside a run's results: the checkout whose fercore wrote them (it writes the report too)
CLI = [sys.executable, "-c", "import sys; from fercore.cli import main; sys.exit(main())"]


def run(out: Path) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    subprocess.run([*CLI, "run", str(SWEEP), "--storage", str(out)], check=True, env=env)
    import fercore

    (out / "equivalence" / CODE).write_text(str(Path(fercore.__file__).resolve().parent.parent))


def _report_with_canonical_ids(folder: Path, scratch: Path) -> Path:
    """FOLDER's report written again, by the code that ran the sweep, from a copy of its tables in which every trial
    id is what the trial was (cnn3/balance/cgan/0). Ray draws trial ids at random and the report orders trials by
    id (which fANOVA's importance depends on): two runs of the same code would otherwise differ there."""
    labels = _labels(folder)
    copy = scratch / folder.parent.name / folder.name
    copy.mkdir(parents=True)
    for name in TABLES:
        df = _read(folder, name)
        for column in ("trial_id", "source_trial_id"):
            if column in df:
                df[column] = df[column].map(lambda v: labels.get(v, v))
        df.to_parquet(copy / f"{name}.parquet", index=False)
    for extra in ("sweep.json", "optuna.db"):
        if (folder / extra).exists():
            (copy / extra).write_bytes((folder / extra).read_bytes())
    code = (folder / CODE).read_text().strip()
    env = {**os.environ, "PYTHONPATH": code}
    subprocess.run([*CLI, "report", str(copy)], check=True, env=env, stdout=subprocess.DEVNULL)
    return copy


def _read(folder: Path, name: str) -> pd.DataFrame:
    path = folder / f"{name}.parquet"
    return pd.read_parquet(path) if path.exists() else pd.DataFrame()


def _labels(folder: Path) -> dict[str, str]:
    """trial id -> what the trial was, e.g. 'cnn3/balance/cgan/0'."""
    trials = _read(folder, "trials")
    return {r["trial_id"]: "/".join(str(r.get(k)) for k in IDENTITY) for r in trials.to_dict("records")}


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, (float, np.floating)) and isinstance(b, (float, np.floating)):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def _keyed(df: pd.DataFrame, labels: dict[str, str]) -> dict[tuple, dict]:
    out = {}
    for row in df.to_dict("records"):
        label = labels.get(row.get("trial_id"), row.get("generator_key", "?"))
        rest = tuple(str(row[k]) for k in ("epoch", "class", "true", "predicted", "source", "x") if k in row)
        out[(label, *rest)] = {k: _plain(v) for k, v in row.items() if not VOLATILE.search(k)}
    return out


def _plain(v):
    if isinstance(v, np.generic):
        return v.item()
    if v is pd.NA:
        return None
    return v


def compare_tables(a: Path, b: Path, problems: list[str], new_keys: tuple[str, ...] = ()) -> None:
    la, lb = _labels(a), _labels(b)
    for name in TABLES:
        ta, tb = _keyed(_read(a, name), la), _keyed(_read(b, name), lb)
        if set(ta) != set(tb):
            problems.append(f"{name}: rows differ: only in A {sorted(set(ta) - set(tb))[:5]}, only in B "
                            f"{sorted(set(tb) - set(ta))[:5]}")
        for key in sorted(set(ta) & set(tb)):
            ra, rb = ta[key], tb[key]
            # A column all null in one run may be absent in the other's table; both mean "no value".
            for col in sorted(set(ra) | set(rb)):
                if col in new_keys and col not in ra:
                    continue
                va, vb = ra.get(col), rb.get(col)
                if not _same(_none_if_nan(va), _none_if_nan(vb)):
                    problems.append(f"{name} {key} {col}: {va!r} != {vb!r}")


def _none_if_nan(v):
    return None if isinstance(v, float) and math.isnan(v) else v


def compare_report(a: Path, b: Path, problems: list[str]) -> None:
    import tempfile

    texts = []
    with tempfile.TemporaryDirectory() as scratch:
        for i, folder in enumerate((a, b)):
            copy = _report_with_canonical_ids(folder, Path(scratch) / str(i))
            texts.append(_normalised(copy))
    _compare_lines(texts, problems)


def _normalised(folder: Path) -> list[str]:
    text = (folder / "report" / "report.md").read_text()
    # Seconds are clocks; the folder is each run's own.
    text = re.sub(r"\d+(\.\d+)? ?s\b", "<s>", text).replace(str(folder), "<folder>")
    return _without_timed_sections(text.splitlines())


def _compare_lines(texts: list[list[str]], problems: list[str]) -> None:
    for i, (la, lb) in enumerate(zip(*texts)):
        if la != lb:
            problems.append(f"report.md line {i + 1}: {la!r} != {lb!r}")
    if len(texts[0]) != len(texts[1]):
        problems.append(f"report.md: {len(texts[0])} lines != {len(texts[1])} lines")


def _without_timed_sections(lines: list[str]) -> list[str]:
    """The report without its Pareto front, which is drawn against train_seconds: a clock, so which trials are on
    it can change between two runs of the same code."""
    out, skipping = [], False
    for line in lines:
        if line.startswith("#"):
            skipping = line.strip("# ").lower().startswith("pareto front")
        if not skipping:
            out.append(line)
    return out


def _events(folder: Path) -> dict[str, dict]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import metadata

    out = {}
    for trial_id, label in _labels(folder).items():
        acc = EventAccumulator(str(folder / "tb" / trial_id), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
        acc.Reload()
        tags = acc.Tags()
        scalars = {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in tags["scalars"]}
        images = {t: [(e.step, e.encoded_image_string) for e in acc.Images(t)] for t in tags["images"]}
        hparams = {}
        try:
            content = acc.PluginTagToContent(metadata.PLUGIN_NAME)
        except KeyError:
            content = {}
        for tag, raw in content.items():
            data = metadata.parse_session_start_info_plugin_data(raw) if tag == metadata.SESSION_START_INFO_TAG \
                else metadata.parse_session_end_info_plugin_data(raw)
            if tag == metadata.SESSION_START_INFO_TAG:
                hparams["start"] = {k: str(v).strip() for k, v in data.hparams.items()}
            else:
                hparams["end"] = data.status
        out[label] = {"scalars": scalars, "images": images, "hparams": hparams}
    return out


def compare_events(a: Path, b: Path, problems: list[str], new_keys: tuple[str, ...] = ()) -> None:
    ea, eb = _events(a), _events(b)
    for label in sorted(set(ea) | set(eb)):
        if label not in ea or label not in eb:
            problems.append(f"tb {label}: only in {'A' if label in ea else 'B'}")
            continue
        for kind in ("scalars", "images", "hparams"):
            xa, xb = ea[label][kind], eb[label][kind]
            for tag in sorted(set(xa) | set(xb)):
                if VOLATILE.search(tag.rpartition("/")[2]):
                    continue
                va, vb = xa.get(tag), xb.get(tag)
                if kind == "scalars" and va is not None and vb is not None and len(va) == len(vb):
                    if all(sa == sb and _same(float(x), float(y)) for (sa, x), (sb, y) in zip(va, vb)):
                        continue
                elif va == vb:
                    continue
                elif kind == "hparams" and tag == "start" and va is not None and vb is not None \
                        and {k: v for k, v in vb.items() if not (k in new_keys and k not in va)} == va:
                    continue
                problems.append(f"tb {label} {kind} {tag}: differs ({str(va)[:120]} != {str(vb)[:120]})")


def compare(a: Path, b: Path, new_keys: tuple[str, ...] = ()) -> list[str]:
    """Every difference between results folders A and B; a config key in NEW_KEYS that only B's trials have (a key
    added on purpose since A was written) is not one."""
    problems: list[str] = []
    compare_tables(a, b, problems, new_keys)
    compare_report(a, b, problems)
    compare_events(a, b, problems, new_keys)
    return problems


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("out", type=Path)
    c = sub.add_parser("compare")
    c.add_argument("a", type=Path)
    c.add_argument("b", type=Path)
    c.add_argument("--new-key", action="append", default=[], metavar="KEY",
                   help="a config key B's code added on purpose: its column and HParams entry are not differences")
    args = p.parse_args()
    if args.cmd == "run":
        run(args.out)
        return 0
    problems = compare(args.a, args.b, tuple(args.new_key))
    for line in problems:
        print(line)
    n = len(_labels(args.a))
    added = f"; keys only B has, on purpose: {', '.join(args.new_key)}" if args.new_key else ""
    print(f"{'DIFFERENT' if problems else 'SAME'}: {n} trials; tables {', '.join(TABLES)}, report.md, "
          f"TensorBoard events compared; {len(problems)} difference(s){added}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
