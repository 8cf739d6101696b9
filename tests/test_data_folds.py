"""k-fold (data.folds, data.fold): folds disjoint in subjects that cover every image, validation carved from the
training folds, a fingerprint per fold (so no cache entry is shared between folds), the trial picking its fold,
and the bad inputs (a fold out of range, a fold without folds, folds with a source's own splits) refused with
status 2 and nothing cached. The slow test runs `fersweep run --smoke` of a grid over data.fold."""
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from fercore.cli import main
from fercore.config import resolve
from fercore.data import DataOptions, load
from fercore.data.splitting import fold_assignment
from fercore.errors import ConfigError, DataError
from fercore.metrics.copies import split_leakage
from fercore.sweep.keys import SweepError
from fercore.sweep.spec import load_sweep
from fercore.trial import select_fold
from tests.face_trees import CK_GROUP, JAFFE_GROUP, ck_tree, jaffe_tree
from tests.test_report import table_after
from tests.test_report_selection import section


@pytest.fixture(scope="module")
def ck(tmp_path_factory) -> Path:
    return ck_tree(tmp_path_factory.mktemp("ck"))


@pytest.fixture(scope="module")
def ck_folds(ck):
    return load(str(ck), use_cache=False, options=DataOptions(group=CK_GROUP, folds=3))


def test_fold_assignment_keeps_subjects_whole_and_is_seeded():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(30), 6)
    labels = rng.integers(0, 7, len(groups))
    folds = fold_assignment(labels, groups, 5, seed=1)
    assert set(folds.tolist()) == set(range(5))
    for g in range(30):
        assert len(set(folds[groups == g].tolist())) == 1
    np.testing.assert_array_equal(folds, fold_assignment(labels, groups, 5, seed=1))
    assert not np.array_equal(folds, fold_assignment(labels, groups, 5, seed=2))
    plain = fold_assignment(labels, None, 5, seed=1)
    assert np.bincount(plain).min() >= len(labels) // 5 - 7  # stratified: near-equal folds


def test_folds_cover_every_image_once_and_keep_subjects_apart(ck_folds):
    data = ck_folds
    assert data.n_folds == 3 and data.folds.shape == (len(data.images), 3)
    tested = (data.folds == 2).sum(axis=1)
    assert (tested == 1).all(), "every image is in exactly one fold's test split"
    fingerprints = {data.fingerprint}
    for i in range(3):
        fold = data.for_fold(i)
        assert fold.fold == i and fold.folds is None and fold.n_folds == 0
        np.testing.assert_array_equal(fold.splits, data.folds[:, i])
        for g in np.unique(fold.groups):
            assert len(set(fold.splits[fold.groups == g].tolist())) == 1, f"fold {i}: a subject spans two splits"
        subjects = fold.subjects()
        assert subjects["test"] >= 3 and subjects["val"] >= 1 and subjects["train"] >= 5
        assert split_leakage(fold)["train_test"] == 0
        fingerprints.add(fold.fingerprint)
    assert len(fingerprints) == 4
    with pytest.raises(ValueError, match="out of range"):
        data.for_fold(3)


def test_every_face_keeps_its_data_set_wide_id_in_each_fold_and_after_images_are_dropped(ck_folds):
    data = ck_folds
    tested = np.concatenate([data.for_fold(i).split_ids("test") for i in range(3)])
    assert sorted(tested.tolist()) == list(range(len(data.images))), "each face in one fold's test split, by its id"
    fold = data.for_fold(1)
    ids = fold.split_ids("test")
    np.testing.assert_array_equal(fold.images[ids], fold.split("test")[0])  # the id is the face's place in the set
    drop = np.zeros(len(data.images), dtype=bool)
    drop[::3] = True
    less = data.without(drop, "a test").for_fold(1)
    np.testing.assert_array_equal(less.split_ids("test"), ids[ids % 3 != 0])  # the same faces keep the same ids
    np.testing.assert_array_equal(data.images[less.split_ids("test")], less.split("test")[0])


def test_folds_without_group_are_stratified_and_jaffe_folds_by_subject(ck, tmp_path):
    plain = load(str(ck), use_cache=False, options=DataOptions(folds=4))
    assert plain.groups is None and ((plain.folds == 2).sum(axis=1) == 1).all()
    jaffe = load(str(jaffe_tree(tmp_path / "jaffe")), use_cache=False, options=DataOptions(group=JAFFE_GROUP, folds=4))
    for i in range(4):
        fold = jaffe.for_fold(i)
        assert fold.subjects()["test"] == 2
        assert all(n > 0 for n in fold.counts()["test"])  # every subject shows every class


def test_converted_cache_keeps_folds(ck, tmp_path):
    options = DataOptions(group=CK_GROUP, folds=3)
    first = load(str(ck), options=options, cache_dir=tmp_path)
    again = load(str(ck), options=options, cache_dir=tmp_path)
    np.testing.assert_array_equal(again.folds, first.folds)
    assert again.for_fold(1).fingerprint == first.for_fold(1).fingerprint
    other = load(str(ck), options=DataOptions(group=CK_GROUP, folds=4), cache_dir=tmp_path)
    assert other.n_folds == 4 and len(list(tmp_path.glob("*.npz"))) == 2


def test_the_trial_picks_its_fold(ck_folds):
    for i in range(3):
        cfg = resolve({"data.folds": 3, "data.fold": i, "data.group": CK_GROUP})
        assert select_fold(cfg, ck_folds).fingerprint == ck_folds.for_fold(i).fingerprint
    with pytest.raises(ConfigError, match="data.folds: config says 0"):
        select_fold(resolve({}), ck_folds)


@pytest.mark.parametrize("flat, expected", [
    ({"data.folds": 3, "data.fold": 3}, "data.fold: 3 is out of range for data.folds 3"),
    ({"data.fold": 2}, "data.fold: 2 is set but data.folds is 0"),
    ({"data.folds": 1}, "data.folds: 1 fold"),
])
def test_fold_keys_are_checked_together(flat, expected):
    with pytest.raises(ConfigError, match=expected):
        resolve(flat)


def test_trial_with_fold_out_of_range_is_status_2_and_caches_nothing(ck, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FERCORE_CACHE", str(tmp_path / "cache"))
    assert main(["trial", f"data.source={ck}", f"data.group={CK_GROUP}", "data.folds=3", "data.fold=7",
                 "--storage", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "data.fold: 7 is out of range" in err
    assert not any(p.is_file() for p in tmp_path.rglob("*"))


def test_data_info_prints_each_fold_and_refuses_bad_folds(ck, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FERCORE_CACHE", str(tmp_path / "cache"))
    assert main(["data", "info", str(ck), "--set", f"group={CK_GROUP}", "--set", "folds=3"]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("fold ")]
    assert len(lines) == 3 and all("subjects" in line for line in lines) and "warning" not in out

    monkeypatch.setenv("FERCORE_CACHE", str(tmp_path / "cache2"))
    assert main(["data", "info", str(ck), "--set", f"group={CK_GROUP}", "--set", "folds=20"]) == 2
    err = capsys.readouterr().err
    assert "data.folds: 20 folds need at least 20 subjects; the data set has 12" in err and str(ck) in err
    split = tmp_path / "split"
    ck_tree(split / "train", subjects=3, frames=1)
    ck_tree(split / "test", subjects=3, frames=1, seed=1)
    assert main(["data", "info", str(split), "--set", "folds=3"]) == 2
    err = capsys.readouterr().err
    assert "data.folds: 3 folds pool every image" in err and str(split / "test") in err
    assert not any(p.is_file() for p in (tmp_path / "cache2").rglob("*"))


def test_procedural_refuses_group_and_folds():
    with pytest.raises(DataError, match="data.folds: the procedural source"):
        load("procedural", scale=0.01, use_cache=False, options=DataOptions(folds=3))


def _sweep_file(tmp_path: Path, source: Path, grid: str) -> Path:
    path = tmp_path / "ck_folds.yaml"
    path.write_text(f"""name: ck_folds
data:
  source: {source}
  group: '{CK_GROUP}'
  folds: 3
sampler: grid
grid:
  data.fold: {grid}
fixed:
  classifier.epochs: 1
  classifier.batch_size: 32
metric: val_macro_f1
mode: max
scheduler: {{type: none}}
max_concurrent: 1
resources: {{cpu: 1, gpu: 0}}
""")
    return path


def test_sweep_file_grid_over_data_fold(ck, tmp_path):
    spec = load_sweep(_sweep_file(tmp_path, ck, "[0, 1, 2]"))
    assert spec.grid == {"data.fold": [0, 1, 2]} and spec.num_samples == 3
    with pytest.raises(SweepError, match="grid.data.fold: 3 is out of range for data.folds 3"):
        load_sweep(_sweep_file(tmp_path, ck, "[0, 3]"))


@pytest.fixture
def local_ray():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=200 * 2**20)
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_fersweep_run_smoke_over_the_folds(ck, tmp_path, local_ray, capsys):
    sweep = _sweep_file(tmp_path, ck, "[0, 1, 2]")
    assert main(["run", str(sweep), "--smoke", "--num-samples", "3", "--storage", str(tmp_path / "results")]) == 0
    rows = pq.read_table(tmp_path / "results" / "ck_folds" / "trials.parquet").to_pylist()
    assert sorted(r["data.fold"] for r in rows) == [0, 1, 2]
    assert [r["status"] for r in rows] == ["completed"] * 3, [r["reason"] for r in rows]
    assert len({r["data_fingerprint"] for r in rows}) == 3
    assert len({r["baseline_key"] for r in rows}) == 3  # each fold its own real-only baseline entry
    assert all(r["leak_real_test"] == 0 for r in rows)
    # The report aggregates the config over its folds before anything is compared, and says so.
    folder = tmp_path / "results" / "ck_folds"
    assert main(["report", str(folder)]) == 0
    text = section((folder / "report" / "report.md").read_text(), "2.1 Across seeds")
    assert "aggregated over its folds before configs are compared" in text
    config = table_after(text, "Per config").iloc[0]
    by_fold = {r["data.fold"]: r["test_macro_f1"] for r in rows}
    assert config["folds"] == "3" and config["trials (seed x fold)"] == "3"
    assert config["mean test macro-F1 [95 % CI]"].startswith(f"{np.mean(list(by_fold.values())):.3f} [")
    assert config["sd over folds of test macro-F1"] == f"{np.std(list(by_fold.values()), ddof=1):.3f}"
