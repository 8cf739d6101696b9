"""k-fold done right (issue 24 item 3): predictions.parquet names each face by its data-set-wide id, and the report
resamples the test images within each fold (its seeds share the fold's faces; folds, whose faces are disjoint, are
drawn independently) and pairs trials face by face. The report's figures are checked against a direct computation
written here: numpy confusion counts and an independent bootstrap, not fercore's resampling code."""
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from scipy import stats

from fercore.labels import CLASSES
from fercore.report.configs import Predictions, compare, group_configs, image_variance, pair_estimate, seed_of
from fercore.report.tables import load
from tests.test_report_folds import FOLDS, build
from tests.test_report_selection import K, N, write_folder

DRAWS = 3000


def macro_f1(true: np.ndarray, pred: np.ndarray) -> float:
    cm = np.bincount(true * K + pred, minlength=K * K).reshape(K, K)
    tp, support, predicted = np.diag(cm), cm.sum(1), cm.sum(0)
    present = support > 0
    return float((2 * tp / np.maximum(support + predicted, 1))[present].mean())


def correlated(table: pd.DataFrame, true: np.ndarray, rng) -> dict[str, np.ndarray]:
    """Predictions whose errors mostly follow one pattern by position, shared by every trial, with a few faces of
    each trial's own (as seeds of one model err alike): a bootstrap that draws the same positions for every fold
    would see them move together, one that draws each trial's faces alone would see them cancel out."""
    wrong = rng.random(N) < 0.45
    shift = rng.integers(1, K, N)
    preds = {}
    for tid in table["trial_id"]:
        own = wrong ^ (rng.random(N) < 0.08)
        preds[tid] = np.where(own, (true + shift) % K, true)
    return preds


def written(tmp_path, rng):
    """build()'s k-fold sweep, its predictions (correlated) keyed by face: fold f's test faces are ids f*N ..
    f*N+N-1, stored in an order of their own per trial (the face, not the row's position, says which image it is)."""
    table, true, _ = build(rng)
    preds = correlated(table, true, rng)
    table["test_macro_f1"] = [macro_f1(true, preds[t]) for t in table["trial_id"]]
    folder = write_folder(tmp_path / "results", table, true, preds, with_predictions=False)
    rows = []
    for tid, pred in preds.items():
        fold = int(table.loc[table["trial_id"] == tid, "data.fold"].iloc[0])
        for i in rng.permutation(N):
            rows.append({"trial_id": tid, "model": "trial", "index": int(i), "face_id": fold * N + int(i),
                         "true": CLASSES[true[i]], "predicted": CLASSES[pred[i]],
                         **{f"p_{c}": float(j == pred[i]) for j, c in enumerate(CLASSES)}})
    pq.write_table(pa.Table.from_pylist(rows), folder / "predictions.parquet")
    return folder, table, true, preds


def direct_image_variance(units, true, preds_b, preds_a=None, rng=None, draw="per fold"):
    """The variance over DRAWS bootstraps of the test faces of the mean over folds of each fold's mean over seeds of
    macro-F1 (of B minus A). DRAW "per fold": each fold's faces drawn on their own and shared by its seeds (right);
    "by position": one draw of positions for every fold, as a report that took a face's position in its fold for
    the face would; "per trial": each trial's faces drawn alone, as if its fold's seeds saw other faces."""
    folds = sorted({f for f, _ in units})
    draws = np.empty(DRAWS)
    for r in range(DRAWS):
        common = rng.integers(0, N, N)
        per_fold = []
        for f in folds:
            faces = common if draw == "by position" else rng.integers(0, N, N)
            values = []
            for u in (u for u in units if u[0] == f):
                if draw == "per trial":
                    faces = rng.integers(0, N, N)
                values.append(macro_f1(true[faces], preds_b[u][faces])
                              - (macro_f1(true[faces], preds_a[u][faces]) if preds_a is not None else 0.0))
            per_fold.append(np.mean(values))
        draws[r] = np.mean(per_fold)
    return float(draws.var(ddof=1))


def half_width(values, image_var):
    n = len(values)
    return stats.t.ppf(0.975, n - 1) * np.sqrt(np.var(values, ddof=1) / n + image_var)


def test_kfold_means_and_intervals_match_a_direct_computation_by_face(tmp_path):
    rng = np.random.default_rng(5)
    folder, table, true, preds = written(tmp_path, rng)
    res = load(folder)
    predictions = Predictions(res.predictions)
    trial = table.iloc[0]["trial_id"]
    keys, _, predicted = predictions[trial]
    fold = int(table.iloc[0]["data.fold"])
    assert np.array_equal(keys, np.arange(fold * N, fold * N + N)), "sorted by face, not by stored row order"
    assert np.array_equal(predicted, preds[trial])

    comparisons = compare(res, 10)
    direct_rng = np.random.default_rng(1)
    for config in comparisons.configs:
        part = config.trials
        units = [(int(r["data.fold"]), int(r["seed"])) for _, r in part.iterrows()]
        by_unit = {u: preds[t] for u, t in zip(units, part["trial_id"])}
        f1s = pd.Series([macro_f1(true, by_unit[u]) for u in units], index=pd.MultiIndex.from_tuples(units))
        assert config.f1.mean == pytest.approx(f1s.groupby(level=0).mean().mean(), abs=1e-9)
        var = direct_image_variance(units, true, by_unit, rng=direct_rng)
        arrays = [predictions[t] for t in part["trial_id"]]
        assert image_variance([seed_of(r) for _, r in part.iterrows()], arrays, K) == pytest.approx(var, rel=0.12)
        got = (config.f1.high - config.f1.low) / 2
        assert got == pytest.approx(half_width(f1s.to_numpy(), var), rel=0.08)
        # The wrong draws give other answers here, so the checks above tell them apart.
        for wrong in ("by position", "per trial"):
            other = direct_image_variance(units, true, by_unit, rng=direct_rng, draw=wrong)
            assert not 0.6 < other / var < 1.6, (wrong, other, var)

    # The paired comparison: each (fold, seed) trial of one lr against the same fold and seed of the other.
    pair = comparisons.pairs[0]
    assert pair.key == "classifier.lr"
    units = [(u[1], u[0]) for u in pair.seeds]  # seed_of gives (seed, fold)
    a = {(int(r["data.fold"]), int(r["seed"])): preds[r["trial_id"]] for _, r in pair.a.trials.iterrows()}
    b = {(int(r["data.fold"]), int(r["seed"])): preds[r["trial_id"]] for _, r in pair.b.trials.iterrows()}
    diffs = np.array([macro_f1(true, b[u]) - macro_f1(true, a[u]) for u in units])
    var = direct_image_variance(units, true, b, preds_a=a, rng=direct_rng)
    estimate = pair_estimate(pair, predictions)
    assert estimate.source == "predictions"
    by_fold = pd.Series(diffs, index=[u[0] for u in units]).groupby(level=0).mean()
    assert estimate.mean == pytest.approx(by_fold.mean(), abs=1e-9)
    assert (estimate.high - estimate.low) / 2 == pytest.approx(half_width(diffs, var), rel=0.08)
    assert len(set(seed_of(r) for _, r in pair.a.trials.iterrows())) == len(pair.a.trials) == 7
    assert len(group_configs(res.completed, res.selection)) == 2 and FOLDS == 3
