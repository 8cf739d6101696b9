"""Result tables as folders of Parquet parts (fercore.results.parts): read mid-sweep by pyarrow, pandas and DuckDB as
one table with every column, each trial once; a resumed store loads every row back; a reader never meets a half
written part; compaction keeps the content, in the order a whole rewrite gives."""
import os
import random
import runpy
import sys
import threading
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from fercore.labels import CLASSES
from fercore.results import (CONFUSION, EMBEDDINGS, EPOCHS, GENERATORS, PER_CLASS, TRIALS, ResultsStore, compact,
                             generator_rows, per_class_rows, write_table_atomic)
from fercore.results import parts
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
    for e in range(1, epochs + 1):
        store.add_epoch(row["trial_id"], {"epoch": e, "val_macro_f1": 0.1 * e, "lr": 1e-3})
    store.add_trial(row)
    artifacts = {"confusion": np.arange(49).reshape(7, 7)}
    if row.get("generator_key"):
        artifacts["embedding"] = points(seed=len(row["trial_id"]))
    store.add_artifacts(row["trial_id"], artifacts)
    if flush:
        store.flush()


def readers(path: Path) -> dict[str, pd.DataFrame]:
    """The table at PATH as pyarrow, pandas and DuckDB read it (DuckDB without union_by_name: every part must have
    the same columns)."""
    return {"pyarrow": pq.read_table(path).to_pandas(), "pandas": pd.read_parquet(path),
            "duckdb": duckdb.sql(f"SELECT * FROM read_parquet('{path}/*.parquet')").df()}


@pytest.fixture(params=[parts.PART_CELLS, 1], ids=["tail", "part_per_flush"])
def part_cells(request, monkeypatch):
    """Both ways a table grows: rows added to the last part, and (a tiny PART_CELLS) a new part at every flush."""
    monkeypatch.setattr(parts, "PART_CELLS", request.param)
    return request.param


def test_mid_sweep_every_reader_sees_every_column_of_every_trial(tmp_path, part_cells):
    store = ResultsStore(tmp_path)
    record(store, real_only("t1"))
    record(store, augmented("t2"))  # new gen_* columns; train_seconds 3 -> 4.5; generator_seconds null -> 40.0
    record(store, real_only("t3", reason="late column"))
    columns = set().union(*(store.trials[t] for t in store.trials))
    for name, df in readers(tmp_path / TRIALS).items():
        assert set(df.columns) == columns, name
        assert df["trial_id"].tolist() == ["t1", "t2", "t3"], name
        by = df.set_index("trial_id")
        assert by.loc["t2", "gen_fid_fear"] == 12.0 and pd.isna(by.loc["t1", "gen_fid_fear"]), name
        assert by["train_seconds"].tolist() == [3.0, 4.5, 3.0], name
        assert by.loc["t3", "reason"] == "late column" and pd.isna(by.loc["t1", "reason"]), name
    schemas = {pq.read_schema(tmp_path / TRIALS / p) for p in parts.part_names(tmp_path / TRIALS)}
    assert len(schemas) == 1, "every part has the table's columns and types"
    assert len(parts.part_names(tmp_path / TRIALS)) == (3 if part_cells == 1 else 1)
    for name in TABLES:
        counts = {reader: len(df) for reader, df in readers(tmp_path / name).items()}
        assert len(set(counts.values())) == 1, (name, counts)
    assert len(pd.read_parquet(tmp_path / EPOCHS)) == 6 and len(pd.read_parquet(tmp_path / CONFUSION)) == 3 * 49
    assert len(pd.read_parquet(tmp_path / EMBEDDINGS)) == 14


def test_a_trial_recorded_again_replaces_its_rows_in_every_table(tmp_path, part_cells):
    store = ResultsStore(tmp_path)
    for i in range(1, 6):
        record(store, augmented(f"t{i}", hit=i > 1))
    # Recorded again (a resumed driver replaying it; the Pareto step adding a column): replaced where it was.
    record(store, augmented("t2", hit=True, test_macro_f1=0.9, pareto=True), epochs=3)
    for name, df in readers(tmp_path / TRIALS).items():
        assert df["trial_id"].tolist() == [f"t{i}" for i in range(1, 6)], name
        assert df.set_index("trial_id").loc["t2", "test_macro_f1"] == 0.9 and df["pareto"].notna().sum() == 1
    epochs = pd.read_parquet(tmp_path / EPOCHS)
    assert len(epochs) == 5 * 2 + 1 and not epochs.duplicated(["trial_id", "epoch"]).any()
    for name, per_trial in ((PER_CLASS, len(CLASSES)), (CONFUSION, 49), (EMBEDDINGS, 14)):
        df = pd.read_parquet(tmp_path / name)
        assert df.groupby("trial_id").size().tolist() == [per_trial] * 5, name
    [g1] = pq.read_table(tmp_path / GENERATORS).to_pylist()
    assert (g1["trials"], g1["cache_hits"], g1["source_trial_id"]) == (5, 4, "t1")


def test_a_store_on_an_existing_folder_loads_every_row_and_keeps_each_trial_once(tmp_path, part_cells):
    first = ResultsStore(tmp_path)
    for i in range(1, 5):
        record(first, augmented(f"t{i}", key=f"g{i % 2}", hit=i > 2) if i % 2 else real_only(f"t{i}"))
    rows = pq.read_table(tmp_path / TRIALS).to_pylist()

    resumed = ResultsStore(tmp_path)
    assert list(resumed.trials) == ["t1", "t2", "t3", "t4"]
    assert list(resumed.trials.values()) == rows
    written = {p: p.stat().st_mtime_ns for p in tmp_path.glob("*.parquet/*")}
    resumed.flush()  # nothing changed: nothing rewritten
    assert {p: p.stat().st_mtime_ns for p in tmp_path.glob("*.parquet/*")} == written
    record(resumed, real_only("t3", test_macro_f1=0.5))  # replayed, now real only: its generator g1 loses it
    record(resumed, augmented("t5", key="g1", hit=True))
    trials = pd.read_parquet(tmp_path / TRIALS)
    assert trials["trial_id"].tolist() == ["t1", "t2", "t3", "t4", "t5"]
    embeddings = pd.read_parquet(tmp_path / EMBEDDINGS)
    # t3's points stay (a trial's artifacts are kept until it brings new ones), once.
    assert embeddings.groupby("trial_id").size().to_dict() == {"t1": 14, "t3": 14, "t5": 14}
    gens = {g["generator_key"]: g for g in pq.read_table(tmp_path / GENERATORS).to_pylist()}
    assert gens == {g["generator_key"]: g for g in generator_rows(list(resumed.trials.values()))}


def whole(rows):
    """ROWS as one table written whole reads them back: every column in every row."""
    return parts.rows_to_table(rows).to_pylist()


def test_compaction_keeps_the_content_in_the_order_of_a_whole_rewrite(tmp_path, monkeypatch):
    monkeypatch.setattr(parts, "PART_CELLS", 1)
    store = ResultsStore(tmp_path)
    for tid in ("t3", "t1", "t4", "t2"):  # finished out of trial-id order, each flush a part
        record(store, augmented(tid, key="g2" if tid == "t4" else "g1", hit=tid != "t3") if tid != "t2"
               else real_only(tid), epochs=3)
    record(store, real_only("t1", test_macro_f1=0.7))  # a replay
    before = {name: pq.read_table(tmp_path / name) for name in TABLES}

    assert set(compact(tmp_path)) == set(TABLES)
    assert compact(tmp_path) == [], "a compact folder is left alone"
    trials = list(store.trials.values())
    for name in TABLES:
        assert len(parts.part_names(tmp_path / name)) == 1, name
        after = pq.read_table(tmp_path / name)
        assert after.schema.equals(before[name].schema), name
        assert sorted(map(str, after.to_pylist())) == sorted(map(str, before[name].to_pylist())), name
    # The order a whole rewrite of every table from the rows gives (what fercore wrote before parts).
    assert pq.read_table(tmp_path / TRIALS).to_pylist() == whole(trials)
    assert [r["trial_id"] for r in trials] == ["t3", "t1", "t4", "t2"]
    epochs = pq.read_table(tmp_path / EPOCHS).to_pylist()
    assert [(r["trial_id"], r["epoch"]) for r in epochs] == [(t, e) for t in ("t1", "t2", "t3", "t4")
                                                             for e in (1, 2, 3)]
    assert pq.read_table(tmp_path / PER_CLASS).to_pylist() == \
        whole([r for t in sorted(store.trials) for r in per_class_rows(store.trials[t])])
    assert pq.read_table(tmp_path / GENERATORS).to_pylist() == whole(generator_rows(trials))
    assert [r["trial_id"] for r in pq.read_table(tmp_path / CONFUSION).to_pylist()[::49]] == ["t1", "t2", "t3", "t4"]
    assert pd.read_parquet(tmp_path / EMBEDDINGS)["trial_id"].drop_duplicates().tolist() == ["t1", "t3", "t4"]

    # The store goes on after a compaction it did not make (`fersweep report` during the sweep).
    record(store, augmented("t5", hit=True))
    record(store, real_only("t3"))
    assert pd.read_parquet(tmp_path / TRIALS)["trial_id"].tolist() == ["t3", "t1", "t4", "t2", "t5"]
    assert pd.read_parquet(tmp_path / EPOCHS).groupby("trial_id").size().to_dict() == \
        {"t1": 3, "t2": 3, "t3": 3, "t4": 3, "t5": 2}
    assert len(pd.read_parquet(tmp_path / PER_CLASS)) == 5 * len(CLASSES)


def test_a_half_written_part_is_never_read(tmp_path, monkeypatch):
    """A part is written under a hidden temporary name and renamed: a writer stopped half way leaves the table as it
    was, which every reader and a resumed store read; compaction clears the leftover."""
    store = ResultsStore(tmp_path)
    record(store, real_only("t1"))
    real_write = pq.write_table

    def half(table, where, **kwargs):
        real_write(table, where, **kwargs)
        with open(where, "r+b") as f:  # cut the footer off, then fail as a killed writer would
            f.truncate(os.path.getsize(where) // 2)
        raise KeyboardInterrupt

    monkeypatch.setattr(pq, "write_table", half)
    store.add_trial(real_only("t2"))
    with pytest.raises(KeyboardInterrupt):
        store.flush()
    monkeypatch.setattr(pq, "write_table", real_write)
    assert not [p for p in (tmp_path / TRIALS).iterdir() if p.name.startswith(".")], "the failed write cleaned up"

    leftover = tmp_path / TRIALS / ".part-00000000.parquet1234.tmp"  # as a SIGKILL would leave it
    leftover.write_bytes(b"PAR1 half a part")
    for name, df in readers(tmp_path / TRIALS).items():
        assert df["trial_id"].tolist() == ["t1"], name
    assert list(ResultsStore(tmp_path).trials) == ["t1"]
    store.flush()  # t2 is still staged: written now
    assert pd.read_parquet(tmp_path / TRIALS)["trial_id"].tolist() == ["t1", "t2"]
    compact(tmp_path)
    assert not leftover.exists()


def test_a_reader_during_a_sweep_sees_whole_parts_and_each_trial_once(tmp_path, monkeypatch):
    """Reads while a thread records trials (pyarrow releases the GIL while it writes and reads), the tail rewritten
    and new parts started (a part of about 15 trial rows)."""
    monkeypatch.setattr(parts, "PART_CELLS", 500)
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
            for path in (tmp_path / TRIALS, tmp_path / EMBEDDINGS):
                table = pq.read_table(path)
                ids = table["trial_id"].to_pylist()
                per_trial = 1 if path.name == TRIALS else 14
                assert len(ids) == per_trial * len(set(ids)), "each trial once"
                if path.name == TRIALS:
                    assert "gen_fid_fear" in table.column_names
                    seen.append(len(ids))
        except Exception as e:  # noqa: BLE001 - every failure is the finding
            errors.append(e)
    writer.join()
    assert not errors, errors[:3]
    assert seen == sorted(seen) and len(set(seen)) > 5, "reads saw the table grow, never shrink"


def test_a_table_written_as_one_file_before_parts_is_read_and_continued(tmp_path):
    rows = [real_only("t1"), augmented("t2")]
    write_table_atomic(tmp_path / TRIALS, rows)
    write_table_atomic(tmp_path / EPOCHS, [{"trial_id": "t1", "epoch": 1, "val_macro_f1": 0.1}])
    store = ResultsStore(tmp_path)
    assert list(store.trials) == ["t1", "t2"]
    record(store, real_only("t3"))
    store.add_epoch("t1", {"epoch": 1, "val_macro_f1": 0.5})
    store.flush()
    assert (tmp_path / TRIALS).is_dir() and not list(tmp_path.glob(".*"))
    assert pd.read_parquet(tmp_path / TRIALS)["trial_id"].tolist() == ["t1", "t2", "t3"]
    epochs = pd.read_parquet(tmp_path / EPOCHS)
    assert len(epochs) == 3 and epochs.set_index(["trial_id", "epoch"]).loc[("t1", 1), "val_macro_f1"] == 0.5


def test_generator_rows_kept_up_to_date_equal_a_whole_derivation():
    """GeneratorUse against generator_rows over random new trials and replays (changed key, cache hit, figures)."""
    rng = random.Random(0)
    use, trials = GeneratorUse(), {}
    for step in range(400):
        tid = f"t{rng.randrange(60):02d}"
        key = rng.choice(["g1", "g2", "g3", None])
        row = {"trial_id": tid, "generator_key": key, "generator_cache_hit": rng.choice([True, False, None]),
               "gen_fid": float(step), "generator.type": "cgan", "generator_seconds": float(step)}
        use.update(trials.get(tid), row)
        trials[tid] = row
        for changed, new in use.take_changed(trials):
            assert new == next((g for g in generator_rows(list(trials.values())) if g["generator_key"] == changed),
                               None), step
    assert use.take_changed(trials) == []


@pytest.mark.slow
def test_the_scale_benchmark_runs_small_and_ends_with_its_figures(capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["results_scale.py", "--trials", "60", "--batch", "10"])
    runpy.run_path(str(Path(__file__).parents[1] / "benchmarks" / "results_scale.py"), run_name="__main__")
    import json

    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last["trials"] == 60 and last["append_ms_at_10"] > 0 and last["append_ms_at_60"] > 0
    assert {"driver_kb_per_trial", "ratio", "read_s", "compact_s"} <= set(last)
