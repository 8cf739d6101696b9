"""Result tables as immutable Parquet parts committed by a manifest (fercore.results.parts, .manifest): read mid-sweep
through the manifest by pyarrow, pandas, DuckDB and Polars as one table with every column, each trial once and in
every table or none; a resumed store loads every row back; a flush that fails leaves what was committed; parts merge
as the table grows, so files grow with trials / 100; the end-of-sweep merge keeps the content in commit order and
leaves a folder any reader takes whole."""
import json
import os
import random
import runpy
import sys
import threading
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import polars as pl
import pyarrow.parquet as pq
import pytest

from fercore.labels import CLASSES
from fercore.results import (CONFUSION, EMBEDDINGS, EPOCHS, GENERATORS, MANIFEST, PER_CLASS, TRIALS, ResultsStore,
                             compact, generator_rows, per_class_rows, read_table, table_files, write_table_atomic)
from fercore.results import parts
from fercore.results.manifest import read_manifest
from fercore.results.rows import GeneratorUse

TABLES = (TRIALS, EPOCHS, PER_CLASS, GENERATORS, CONFUSION, EMBEDDINGS)


def real_only(tid, **extra):
    return {"trial_id": tid, "classifier.backbone": "cnn3", "status": "completed", "test_macro_f1": 0.3,
            "generator_seconds": None, "train_seconds": 3, **{f"test_recall_{c}": 0.1 for c in CLASSES}, **extra}


def augmented(tid, key="g1", hit=False, **extra):
    """An augmented trial: gen_* columns a real-only one lacks, a fraction where it had an integer and a null."""
    return {**real_only(tid), "generator.type": "cgan", "generator_key": key, "generator_cache_hit": hit,
            "gen_fid": 12.5, "generator_seconds": 40.0, "train_seconds": 4.5, "n_train_synthetic": 70,
            **{f"gen_fid_{c}": 10.0 + i for i, c in enumerate(CLASSES)}, **extra}


def points(n=14, seed=0):
    rng = np.random.default_rng(seed)
    return {"source": np.arange(n) % 2, "label": np.arange(n) % len(CLASSES), "x": rng.normal(size=n),
            "y": rng.normal(size=n)}


def record(store, row, epochs=2, flush=True):
    store.add_epochs(row["trial_id"], [{"epoch": e, "val_macro_f1": 0.1 * e, "lr": 1e-3}
                                       for e in range(1, epochs + 1)])
    store.add_trial(row)
    artifacts = {"confusion": np.arange(49).reshape(7, 7)}
    if row.get("generator_key"):
        artifacts["embedding"] = points(seed=len(row["trial_id"]))
    store.add_artifacts(row["trial_id"], artifacts)
    if flush:
        store.flush()


def readers(path: Path) -> dict[str, pd.DataFrame]:
    """The table at PATH (folder/table) as pyarrow, pandas, DuckDB and Polars read the files its folder's manifest
    names, as docs/results-tables.md shows (DuckDB and Polars without union_by_name: every part must have the same
    columns)."""
    files = [str(f) for f in table_files(path.parent, path.name)]
    return {"pyarrow": pq.read_table(files).to_pandas(), "pandas": pd.read_parquet(files),
            "duckdb": duckdb.sql(f"SELECT * FROM read_parquet({files})").df(),
            "polars": pl.read_parquet(files).to_pandas()}


def plain(path: Path) -> pd.DataFrame:
    """The table as a reader given the folder itself reads it (right once the sweep has ended)."""
    return pd.read_parquet(path)


@pytest.fixture(params=[parts.FANOUT, 2], ids=["fanout10", "fanout2"])
def fanout(request, monkeypatch):
    """Parts merged every 10 flushes (fercore's) and every 2 (merges at nearly every flush, over both levels)."""
    monkeypatch.setattr(parts, "FANOUT", request.param)
    return request.param


def test_mid_sweep_every_reader_sees_every_column_of_every_trial(tmp_path, fanout):
    store = ResultsStore(tmp_path)
    given = [real_only("t1"), augmented("t2"), real_only("t3", reason="late column")]
    for row in given:  # t2: new gen_* columns; train_seconds 3 -> 4.5; generator_seconds null -> 40.0; t3: reason
        record(store, row)
    columns = set().union(*given)
    assert set(store.trial_rows()[0]) == columns and store.trial_ids() == ["t1", "t2", "t3"]
    for name, df in readers(tmp_path / TRIALS).items():
        assert set(df.columns) == columns, name
        assert df["trial_id"].tolist() == ["t1", "t2", "t3"], name
        by = df.set_index("trial_id")
        assert by.loc["t2", "gen_fid_fear"] == 12.0 and pd.isna(by.loc["t1", "gen_fid_fear"]), name
        assert by["train_seconds"].tolist() == [3.0, 4.5, 3.0], name
        assert by.loc["t3", "reason"] == "late column" and pd.isna(by.loc["t1", "reason"]), name
    schemas = {pq.read_schema(f) for f in table_files(tmp_path, TRIALS)}
    assert len(schemas) == 1, "every part has the table's columns and types"
    assert len(table_files(tmp_path, TRIALS)) == (3 if fanout > 3 else 2)  # fanout 2: t1 and t2 merged
    for name in TABLES:
        counts = {reader: len(df) for reader, df in readers(tmp_path / name).items()}
        assert len(set(counts.values())) == 1, (name, counts)
    assert len(read_table(tmp_path, EPOCHS)) == 6 and len(read_table(tmp_path, CONFUSION)) == 3 * 49
    assert len(read_table(tmp_path, EMBEDDINGS)) == 14


def test_a_trial_recorded_again_replaces_its_rows_in_every_table(tmp_path, fanout):
    store = ResultsStore(tmp_path)
    for i in range(1, 6):
        record(store, augmented(f"t{i}", hit=i > 1))
    # Recorded again (a resumed driver replaying it; the Pareto step adding a column): replaced where it was.
    record(store, augmented("t2", hit=True, test_macro_f1=0.9, pareto=True), epochs=3)
    for name, df in readers(tmp_path / TRIALS).items():
        assert df["trial_id"].tolist() == [f"t{i}" for i in range(1, 6)], name
        assert df.set_index("trial_id").loc["t2", "test_macro_f1"] == 0.9 and df["pareto"].notna().sum() == 1
    epochs = read_table(tmp_path, EPOCHS).to_pandas()
    assert len(epochs) == 5 * 2 + 1 and not epochs.duplicated(["trial_id", "epoch"]).any()
    for name, per_trial in ((PER_CLASS, len(CLASSES)), (CONFUSION, 49), (EMBEDDINGS, 14)):
        df = read_table(tmp_path, name).to_pandas()
        assert df.groupby("trial_id").size().tolist() == [per_trial] * 5, name
    [g1] = read_table(tmp_path, GENERATORS).to_pylist()
    assert (g1["trials"], g1["cache_hits"], g1["source_trial_id"]) == (5, 4, "t1")


def test_a_store_on_an_existing_folder_loads_every_row_and_keeps_each_trial_once(tmp_path, fanout):
    first = ResultsStore(tmp_path)
    for i in range(1, 5):
        record(first, augmented(f"t{i}", key=f"g{i % 2}", hit=i > 2) if i % 2 else real_only(f"t{i}"))
    rows = read_table(tmp_path, TRIALS).to_pylist()

    resumed = ResultsStore(tmp_path)
    assert resumed.trial_ids() == ["t1", "t2", "t3", "t4"]
    assert resumed.trial_rows() == rows
    written = {p: p.stat().st_mtime_ns for p in tmp_path.glob("*.parquet/*")} | {
        tmp_path / MANIFEST: (tmp_path / MANIFEST).stat().st_mtime_ns}
    resumed.flush()  # nothing changed: nothing written, not even the manifest
    assert {p: p.stat().st_mtime_ns for p in written} == written
    record(resumed, real_only("t3", test_macro_f1=0.5))  # replayed, now real only: its generator g1 loses it
    record(resumed, augmented("t5", key="g1", hit=True))
    assert read_table(tmp_path, TRIALS)["trial_id"].to_pylist() == ["t1", "t2", "t3", "t4", "t5"]
    embeddings = read_table(tmp_path, EMBEDDINGS).to_pandas()
    # t3's points stay (a trial's artifacts are kept until it brings new ones), once.
    assert embeddings.groupby("trial_id").size().to_dict() == {"t1": 14, "t3": 14, "t5": 14}
    gens = {g["generator_key"]: g for g in read_table(tmp_path, GENERATORS).to_pylist()}
    assert gens == {g["generator_key"]: g for g in generator_rows(resumed.trial_rows())}


def whole(rows):
    """ROWS as one table written whole reads them back: every column in every row."""
    return parts.rows_to_table(rows).to_pylist()


def test_the_end_of_sweep_merge_keeps_the_content_and_leaves_a_folder_any_reader_takes_whole(tmp_path, fanout):
    store = ResultsStore(tmp_path)
    for tid in ("t3", "t1", "t4", "t2"):  # finished out of trial-id order, each flush a part
        record(store, augmented(tid, key="g2" if tid == "t4" else "g1", hit=tid != "t3") if tid != "t2"
               else real_only(tid), epochs=3)
    record(store, real_only("t1", test_macro_f1=0.7))  # a replay
    before = {name: read_table(tmp_path, name) for name in TABLES}
    trials = store.trial_rows()

    several = {name for name in TABLES if len(read_manifest(tmp_path).tables[name]) > 1}
    assert several and set(compact(tmp_path)) == several
    assert compact(tmp_path) == [], "a compact folder is left alone"
    assert read_manifest(tmp_path).garbage == []
    for name in TABLES:
        files = os.listdir(tmp_path / name)
        assert len(files) == 1 and table_files(tmp_path, name) == [tmp_path / name / files[0]], (name, files)
        after = plain(tmp_path / name)  # the folder itself, as any reader takes it once the sweep ended
        assert sorted(map(str, after.to_dict("records"))) == sorted(map(str, before[name].to_pandas().to_dict(
            "records"))), name
        assert pq.read_table(tmp_path / name).schema.equals(before[name].schema), name
    # Rows in commit order: trials as they finished (a replay where it was), the other tables by trial likewise.
    assert pq.read_table(tmp_path / TRIALS).to_pylist() == whole(trials)
    assert [r["trial_id"] for r in trials] == ["t3", "t1", "t4", "t2"]
    epochs = pq.read_table(tmp_path / EPOCHS).to_pylist()
    # The replay brought two epochs: they replace t1's three, where they were.
    assert [(r["trial_id"], r["epoch"]) for r in epochs] == [(t, e) for t in ("t3", "t1", "t4", "t2")
                                                             for e in ((1, 2) if t == "t1" else (1, 2, 3))]
    assert pq.read_table(tmp_path / PER_CLASS).to_pylist() == whole([r for t in trials for r in per_class_rows(t)])
    assert {g["generator_key"]: g for g in pq.read_table(tmp_path / GENERATORS).to_pylist()} == \
        {g["generator_key"]: g for g in whole(generator_rows(trials))}
    assert [r["trial_id"] for r in pq.read_table(tmp_path / CONFUSION).to_pylist()[::49]] == ["t3", "t1", "t4", "t2"]
    assert plain(tmp_path / EMBEDDINGS)["trial_id"].drop_duplicates().tolist() == ["t3", "t1", "t4"]

    # The store goes on after the merge (a sweep resumed after it ended, to run more trials).
    record(store, augmented("t5", hit=True))
    record(store, real_only("t3"))
    assert read_table(tmp_path, TRIALS)["trial_id"].to_pylist() == ["t3", "t1", "t4", "t2", "t5"]
    assert read_table(tmp_path, EPOCHS).to_pandas().groupby("trial_id").size().to_dict() == \
        {"t1": 2, "t2": 3, "t3": 2, "t4": 3, "t5": 2}  # t1 and t3 replayed with two epochs each
    assert len(read_table(tmp_path, PER_CLASS)) == 5 * len(CLASSES)


def test_a_flush_that_fails_commits_nothing_and_its_rows_are_written_by_the_next(tmp_path, monkeypatch):
    """A write that fails half way (a full disk; a kill is tests/test_results_durability.py's) leaves every table as
    the last commit had it, for every reader and a resumed store; what it wrote goes; its rows stay staged."""
    store = ResultsStore(tmp_path)
    record(store, real_only("t1"))
    committed = read_manifest(tmp_path)
    real_write = parts.write_part
    calls = []

    def fails_on_the_third_table(path, pieces, schema):
        calls.append(path)
        if len(calls) < 3:
            return real_write(path, pieces, schema)

        def disk_full_after_the_first_piece():
            yield from list(pieces)[:1]
            assert path.exists()  # half a part on disk
            raise OSError(28, "No space left on device")
        real_write(path, disk_full_after_the_first_piece(), schema)

    monkeypatch.setattr(parts, "write_part", fails_on_the_third_table)
    record(store, real_only("t2"), flush=False)
    with pytest.raises(OSError, match="No space left"):
        store.flush()
    monkeypatch.setattr(parts, "write_part", real_write)
    assert read_manifest(tmp_path) == committed
    named = {str(f) for name in TABLES for f in table_files(tmp_path, name)}
    assert {str(p) for p in tmp_path.glob("*.parquet/*")} == named, "the failed flush removed what it wrote"
    for name, df in readers(tmp_path / TRIALS).items():
        assert df["trial_id"].tolist() == ["t1"], name
    assert len(read_table(tmp_path, EPOCHS)) == 2 and len(read_table(tmp_path, CONFUSION)) == 49
    leftover = tmp_path / TRIALS / "part-00000099-0-deadbeef.parquet"  # as a SIGKILL before the commit leaves it
    leftover.write_bytes(b"PAR1 half a part")
    assert ResultsStore(tmp_path).trial_ids() == ["t1"]
    assert not leftover.exists(), "a part no manifest names is removed by the next writer"
    store.flush()  # t2 is still staged: written now, in every table
    assert read_table(tmp_path, TRIALS)["trial_id"].to_pylist() == ["t1", "t2"]
    assert read_table(tmp_path, EPOCHS).to_pandas().groupby("trial_id").size().to_dict() == {"t1": 2, "t2": 2}


def test_a_reader_during_a_sweep_sees_each_trial_once_and_in_every_table(tmp_path, monkeypatch):
    """Reads while a thread records trials (pyarrow releases the GIL while it writes and reads), parts merged every
    third flush: each read takes one manifest and reads two tables from it."""
    monkeypatch.setattr(parts, "FANOUT", 3)
    monkeypatch.setattr("fercore.results.manifest.GRACE_S", 0.5)
    store = ResultsStore(tmp_path)
    record(store, augmented("t000"))
    done, seen, errors = threading.Event(), [], []

    def sweep():
        for i in range(1, 80):
            record(store, augmented(f"t{i:03d}", hit=True))
        done.set()

    writer = threading.Thread(target=sweep)
    writer.start()
    while not done.is_set():
        try:
            manifest = read_manifest(tmp_path)
            trials = pq.read_table([str(f) for f in table_files(tmp_path, TRIALS, manifest)])
            confusion = pq.read_table([str(f) for f in table_files(tmp_path, CONFUSION, manifest)])
            ids = trials["trial_id"].to_pylist()
            assert len(ids) == len(set(ids)), "each trial once"
            assert "gen_fid_fear" in trials.column_names
            counts = confusion.to_pandas().groupby("trial_id").size()
            assert set(counts.index) == set(ids) and (counts == 49).all(), "a trial in every table or in none"
            seen.append(len(ids))
        except FileNotFoundError:
            pass  # a part removed after its grace period, under a reader slower than it: read again
        except Exception as e:  # noqa: BLE001 - every failure is the finding
            errors.append(e)
    writer.join()
    assert not errors, errors[:3]
    assert seen == sorted(seen) and len(set(seen)) > 5, "reads saw the table grow, never shrink"


def test_files_grow_with_trials_over_a_hundred_and_each_row_is_rewritten_at_most_twice(tmp_path):
    store = ResultsStore(tmp_path)
    for i in range(250):
        store.add_trial(real_only(f"t{i:04d}"))
        store.add_artifacts(f"t{i:04d}", {"confusion": np.ones((7, 7))})
        store.flush()
    files = table_files(tmp_path, TRIALS)
    levels = [parts.level_of(f.name) for f in files]
    # 250 flushes: two parts of 100, four of 10, ten... no: 5 of 10 and 0 of 1 (250 = 2 x 100 + 5 x 10).
    assert levels == [2, 2, 1, 1, 1, 1, 1], levels
    assert [pq.ParquetFile(f).metadata.num_rows for f in files] == [100, 100, 10, 10, 10, 10, 10]
    assert read_table(tmp_path, TRIALS)["trial_id"].to_pylist() == [f"t{i:04d}" for i in range(250)]
    on_disk = sum(len(os.listdir(tmp_path / name)) for name in TABLES if (tmp_path / name).is_dir())
    named = sum(len(table_files(tmp_path, name)) for name in TABLES)
    garbage = len(read_manifest(tmp_path).garbage)
    assert on_disk == named + garbage and named <= 3 * 7 + 1
    manifest = json.loads((tmp_path / MANIFEST).read_text())
    assert manifest["format"] == "fercore-results-1" and manifest["version"] == 1 + 250  # the empty folder's, then one per flush


def test_a_table_written_as_one_file_before_parts_is_read_and_continued(tmp_path):
    rows = [real_only("t1"), augmented("t2")]
    write_table_atomic(tmp_path / TRIALS, rows)
    write_table_atomic(tmp_path / EPOCHS, [{"trial_id": "t1", "epoch": 1, "val_macro_f1": 0.1}])
    store = ResultsStore(tmp_path)
    assert store.trial_ids() == ["t1", "t2"]
    record(store, real_only("t3"))
    store.add_epochs("t1", [{"epoch": 1, "val_macro_f1": 0.5}])
    store.flush()
    assert (tmp_path / TRIALS).is_dir()
    assert read_table(tmp_path, TRIALS)["trial_id"].to_pylist() == ["t1", "t2", "t3"]
    epochs = read_table(tmp_path, EPOCHS).to_pandas()
    assert len(epochs) == 3 and epochs.set_index(["trial_id", "epoch"]).loc[("t1", 1), "val_macro_f1"] == 0.5
    compact(tmp_path)
    assert not list(tmp_path.glob(".*")) and plain(tmp_path / TRIALS)["trial_id"].tolist() == ["t1", "t2", "t3"]


def test_a_folder_of_parts_written_before_the_manifest_is_read_and_continued(tmp_path):
    """What fercore wrote before manifests (a table as a folder of parts, every part committed) reads as before; the
    next flush writes the first manifest."""
    (tmp_path / TRIALS).mkdir()
    pq.write_table(parts.rows_to_table([real_only("t1")]), tmp_path / TRIALS / "part-00000000.parquet")
    pq.write_table(parts.rows_to_table([augmented("t2")]), tmp_path / TRIALS / "part-00000001.parquet")
    assert read_table(tmp_path, TRIALS)["trial_id"].to_pylist() == ["t1", "t2"]
    store = ResultsStore(tmp_path)
    assert store.trial_ids() == ["t1", "t2"]
    assert read_manifest(tmp_path).tables == {TRIALS: ["part-00000000.parquet", "part-00000001.parquet"]}
    record(store, real_only("t3"))
    assert read_manifest(tmp_path).version == 2
    assert read_table(tmp_path, TRIALS)["trial_id"].to_pylist() == ["t1", "t2", "t3"]


def test_epochs_an_earlier_fercore_committed_one_at_a_time_are_replaced_whole(tmp_path):
    """Before a trial's epochs were committed with its row they were put one at a time, so one trial's epochs could
    be in several parts: the next flush merges them into one part, and a replayed trial's epochs replace all of its
    old ones."""
    (tmp_path / EPOCHS).mkdir()
    epoch = lambda tid, e: {"trial_id": tid, "epoch": e, "val_macro_f1": 0.1 * e}  # noqa: E731
    pq.write_table(parts.rows_to_table([epoch("t1", 1), epoch("t1", 2), epoch("t2", 1)]),
                   tmp_path / EPOCHS / "part-00000000.parquet")
    pq.write_table(parts.rows_to_table([epoch("t1", 3), epoch("t2", 2)]), tmp_path / EPOCHS / "part-00000001.parquet")
    store = ResultsStore(tmp_path)
    record(store, real_only("t1"), epochs=2)  # replayed: two epochs where it had three
    for name, df in readers(tmp_path / EPOCHS).items():
        assert sorted(zip(df["trial_id"], df["epoch"])) == [("t1", 1), ("t1", 2), ("t2", 1), ("t2", 2)], name
    assert len(table_files(tmp_path, EPOCHS)) == 1
    record(store, real_only("t2"), epochs=1)  # and again, now from the merged part
    df = read_table(tmp_path, EPOCHS).to_pandas()
    assert sorted(zip(df["trial_id"], df["epoch"])) == [("t1", 1), ("t1", 2), ("t2", 1)]


def test_generator_rows_kept_up_to_date_equal_a_whole_derivation():
    """GeneratorUse against generator_rows over random new trials and replays (changed key, cache hit, figures)."""
    rng = random.Random(0)
    trials = {}
    use = GeneratorUse(lookup=lambda tid: trials[tid])  # a replaced source is read back, as the store does
    for step in range(400):
        tid = f"t{rng.randrange(60):02d}"
        key = rng.choice(["g1", "g2", "g3", None])
        row = {"trial_id": tid, "generator_key": key, "generator_cache_hit": rng.choice([True, False, None]),
               "gen_fid": float(step), "generator.type": "cgan", "generator_seconds": float(step)}
        use.update(row)
        trials[tid] = row
        for changed, new in use.take_changed():
            assert new == next((g for g in generator_rows(list(trials.values())) if g["generator_key"] == changed),
                               None), step
        assert len(use._sources) <= 2 * 3, "only each generator's first builder and first user are held"
    assert use.take_changed() == []


@pytest.mark.slow
def test_the_scale_benchmark_runs_small_and_ends_with_its_figures(capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["results_scale.py", "--trials", "60", "--batch", "10"])
    runpy.run_path(str(Path(__file__).parents[1] / "benchmarks" / "results_scale.py"), run_name="__main__")
    import json

    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last["trials"] == 60 and last["append_ms_at_10"] > 0 and last["append_ms_at_60"] > 0
    assert {"driver_kb_per_trial", "ratio", "read_s", "compact_s", "compact_peak_rss_mb"} <= set(last)
